"""Run benchmarks: every benchmarks/<name>.py (not starting with _), or the ones named.

    python benchmarks/run.py            # all
    python benchmarks/run.py vr_apply   # one

Each benchmark prints its figures beside a baseline measured in the same run
and ends with a line `RESULT <name> key=value ...`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(
        p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "run"
    )


def main(argv: list[str]) -> int:
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}",
            file=sys.stderr,
        )
        return 2
    failed = []
    for name in names:
        print(f"==> {name}", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], check=False).returncode
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
