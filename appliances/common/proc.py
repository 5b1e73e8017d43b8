"""Running external commands: argv lists only, never a shell."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def output(self) -> str:
        """stderr and stdout together, as an operator wants to read them."""
        return "\n".join(part for part in (self.stderr.strip(), self.stdout.strip()) if part)


class CommandError(RuntimeError):
    def __init__(self, result: Result):
        self.result = result
        super().__init__(
            f"{' '.join(result.argv)} exited with {result.returncode}: {result.output[:2000]}"
        )


async def run(
    argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0, check: bool = False
) -> Result:
    """Run ``argv`` and collect its output. A timeout kills the command."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input.encode() if input is not None else None), timeout
        )
    except (TimeoutError, asyncio.CancelledError):
        proc.kill()
        await proc.wait()
        raise
    result = Result(tuple(argv), proc.returncode or 0, out.decode(errors="replace"),
                    err.decode(errors="replace"))
    if check and not result.ok:
        raise CommandError(result)
    return result
