"""Running build stages: progress with timings, a log per stage, failures that say why."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


class StageError(RuntimeError):
    """A build stage failed; ``stage`` names it, the message says why."""

    def __init__(self, stage: str, reason: str):
        super().__init__(f"image build failed in stage {stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass
class Progress:
    """Prints ``==> [n/N] stage: what`` and each stage's time; keeps the timings."""

    total: int
    log_dir: Path
    out: object = sys.stderr
    timings: dict[str, float] = field(default_factory=dict)
    current: str = ""
    _n: int = 0

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)  # type: ignore[arg-type]

    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self._n += 1
        self.current = name
        self.say(f"==> [{self._n}/{self.total}] {name}: {what}")
        started = time.monotonic()
        try:
            yield
        except StageError:
            raise
        except Exception as exc:  # anything unexpected still names its stage
            raise StageError(name, f"{type(exc).__name__}: {exc}") from exc
        elapsed = time.monotonic() - started
        self.timings[name] = round(elapsed, 1)
        self.say(f"    {name} done in {elapsed:.1f} s")

    def log_path(self) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{self.current or 'build'}.log"

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: Path | None = None, stdout: Path | None = None,
            stdin: bytes | None = None) -> None:
        """Run one command of the current stage; its output goes to the stage's log
        (or stdout to a file). A failure raises StageError with the log's last lines."""
        log = self.log_path()
        full_env = {**os.environ, **(env or {})}
        with log.open("ab") as err:
            err.write(f"$ {' '.join(argv)}\n".encode())
            err.flush()
            out_file = stdout.open("wb") if stdout else None
            try:
                res = subprocess.run(list(argv), stdout=out_file or err, stderr=err,
                                     env=full_env, cwd=cwd, check=False, input=stdin,
                                     stdin=None if stdin is not None else subprocess.DEVNULL)
            except FileNotFoundError as exc:
                raise StageError(self.current, f"{argv[0]} is not installed "
                                 "(run `make image`, which installs the build tools)") from exc
            finally:
                if out_file:
                    out_file.close()
        if res.returncode != 0:
            raise StageError(self.current, f"{Path(argv[0]).name} exited {res.returncode}; "
                             f"last lines of {log}:\n{tail(log)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
