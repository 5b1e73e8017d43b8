"""Benchmark ``ssvm_cpvm``: the secondary storage and console proxy appliances.

* **download_ratio** (``_ssvm_download.py``): download-and-verify of a 2 GiB file
  from a loopback HTTP server by the storage role, beside ``curl | sha256sum`` of
  the same file in the same run (target: at least 0.9 of its throughput).
* **console_sessions**, **added_latency_ms**, **rss_mb** (``cpvm_sessions.run()``):
  concurrent console sessions through the console proxy, the latency it adds per
  frame and its memory.

Each part returns its lines and its RESULT fields; the RESULT line is assembled
from the named fields, whichever parts ran. Run:
``.venv/bin/python benchmarks/ssvm_cpvm.py [--size-gib N] [--rounds N]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import _ssvm_download  # noqa: E402
import cpvm_sessions  # noqa: E402
from _common import progress, result_line  # noqa: E402

#: Every field of the RESULT line, in order; a part that did not run leaves "na".
FIELDS = ("download_ratio", "console_sessions", "added_latency_ms", "rss_mb")


def _console(sessions: int) -> tuple[list[str], dict]:
    """cpvm_sessions prints its own lines; its three RESULT fields."""
    found = cpvm_sessions.run(sessions=sessions)
    return [], {key: found[key] for key in ("console_sessions", "added_latency_ms", "rss_mb")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=float, default=2.0, help="download size (GiB)")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each download")
    parser.add_argument("--sessions", type=int, default=200, help="console sessions")
    parser.add_argument(
        "--skip",
        choices=["download", "console"],
        action="append",
        default=[],
        help="leave a part out (its fields read na)",
    )
    args = parser.parse_args(argv)
    fields: dict[str, object] = dict.fromkeys(FIELDS, "na")
    parts = [
        (
            "download",
            lambda: _ssvm_download.measure(
                int(args.size_gib * _ssvm_download.GiB), args.rounds, progress
            ),
        ),
        ("console", lambda: _console(args.sessions)),
    ]
    for name, run in parts:
        if name in args.skip:
            continue
        progress(f"ssvm_cpvm: {name}")
        lines, found = run()
        for line in lines:
            print(line, flush=True)
        fields.update(found)
    print(result_line("ssvm_cpvm", [(key, fields[key]) for key in FIELDS]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
