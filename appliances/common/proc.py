"""Running external commands: argv lists only, never a shell."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def output(self) -> str:
        """stderr and stdout together, as an operator wants to read them."""
        return "\n".join(part for part in (self.stderr.strip(), self.stdout.strip()) if part)

    def check(self) -> Result:
        if self.rc != 0:
            raise CommandError(self)
        return self


class CommandError(RuntimeError):
    def __init__(self, result: Result):
        self.result = result
        super().__init__(
            f"command failed (rc {result.rc}): {' '.join(result.argv)}: {result.output[:2000]}"
        )


async def run(
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    timeout: float = 60.0,
    check: bool = False,
    env: dict[str, str] | None = None,
) -> Result:
    """Run ``argv`` to completion and collect its output; a timeout kills it (rc -9)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    data = input.encode() if isinstance(input, str) else input
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), timeout)
        rc = proc.returncode if proc.returncode is not None else -1
        note = ""
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        out, err = await proc.communicate()
        rc, note = -9, f"\n(timed out after {timeout:g} s)"
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    result = Result(tuple(argv), rc, out.decode(errors="replace"),
                    err.decode(errors="replace") + note)
    return result.check() if check else result
