"""A wheel of a Skiff source checkout, built only when the source changed.

Runs on the Ansible controller (skiff_mgmt's install tasks). The wheel's name never
changes (the version is the project's), so the role cannot tell a new build from
pip's words; instead each build lives in ``<cache>/<content hash>/``, and the same
source gives the same file, byte for byte, on every run: the role's copy to the
managed host then reports no change and nothing is reinstalled.

    python skiff_wheel.py --source DIR --cache DIR (--build | --probe)

prints ``{"wheel": path or null, "hash": .., "built": bool, "would_build": bool}``.
--probe (check mode) never builds. The build runs in a copy of the source, so the
checkout gets no build/ or egg-info folders.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: What goes into the wheel (pyproject.toml's packages and metadata files).
TOP_FILES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg", "setup.py")
PACKAGES = ("mgmt", "appliances")
SKIP_DIRS = {"__pycache__", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
SKIP_SUFFIXES = (".pyc", ".pyo")
KEEP_BUILDS = 3


def source_files(source: Path) -> list[Path]:
    files = [source / name for name in TOP_FILES if (source / name).is_file()]
    for package in PACKAGES:
        for root, dirs, names in os.walk(source / package):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info"))
            files += [Path(root) / n for n in sorted(names) if not n.endswith(SKIP_SUFFIXES)]
    return files


def content_hash(source: Path) -> str:
    digest = hashlib.sha256()
    for path in source_files(source):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(b"x" if os.access(path, os.X_OK) else b"-")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:24]


def cached_wheel(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    return wheels[0] if len(wheels) == 1 else None


def build(source: Path, folder: Path) -> Path:
    """pip wheel in a private copy of the source; the result moved into ``folder``."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="skiff-wheel-", dir=folder.parent) as tmp:
        copy = Path(tmp) / "src"
        for path in source_files(source):
            target = copy / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        out = Path(tmp) / "out"
        proc = subprocess.run(  # noqa: S603  (argv, no shell)
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--quiet",
                "--wheel-dir",
                str(out),
                str(copy),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"pip wheel failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
        shutil.rmtree(folder, ignore_errors=True)
        out.rename(folder)
    wheel = cached_wheel(folder)
    if wheel is None:
        raise SystemExit(f"pip wheel left no single wheel in {folder}")
    return wheel


def prune(cache: Path, keep: Path) -> None:
    """Keep the newest few builds (a checkout that goes back and forth stays cheap)."""
    builds = sorted(
        (
            p
            for p in cache.iterdir()
            if p.is_dir() and p != keep and not p.name.startswith("skiff-wheel-")
        ),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[KEEP_BUILDS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=Path, required=True)
    p.add_argument("--cache", type=Path, required=True)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--build", action="store_true")
    mode.add_argument("--probe", action="store_true")
    args = p.parse_args(argv)
    source = args.source.resolve()
    if not (source / "pyproject.toml").is_file():
        raise SystemExit(f"{source} is not a Skiff checkout (no pyproject.toml)")
    key = content_hash(source)
    folder = args.cache.resolve() / key
    wheel = cached_wheel(folder)
    built = False
    if wheel is None and args.build:
        wheel, built = build(source, folder), True
        prune(folder.parent, folder)
    json.dump(
        {
            "wheel": str(wheel) if wheel else None,
            "hash": key,
            "built": built,
            "would_build": wheel is None,
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
