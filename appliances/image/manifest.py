"""manifest.json and sha512sum.txt: what is in the image and what it was built from.

The manifest lists every Debian package from the image's own dpkg status with
its version, the Python distributions in its venv, each artifact's sha256 and
size, and the build inputs (recipe and overlay hashes, the wheel's hash, the
mirror, SOURCE_DATE_EPOCH). ``verify()`` checks a build against its recipe.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from appliances.image.recipe import Recipe
from appliances.image.stages import StageError

FORMAT = 1


def dpkg_packages(status_text: str) -> dict[str, dict[str, str]]:
    """Installed packages from a dpkg status file: name -> version, architecture."""
    packages: dict[str, dict[str, str]] = {}
    for stanza in status_text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = {"version": fields.get("Version", ""),
                                           "architecture": fields.get("Architecture", "")}
    return dict(sorted(packages.items()))


def python_packages(rootfs: Path, venv: str) -> dict[str, str]:
    """Distributions in the image's venv (from their .dist-info folder names)."""
    found: dict[str, str] = {}
    for info in rootfs.glob(f"{venv.lstrip('/')}/lib/python3*/site-packages/*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        found[name.lower().replace("_", "-")] = version
    return dict(sorted(found.items()))


def sha256_file(path: Path) -> str:
    return _hash(path, hashlib.sha256())


def _hash(path: Path, digest) -> str:
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(rootfs: Path, recipe: Recipe, out_dir: Path, rootfs_tar: Path,
                   qcow2: Path | None, inputs: dict) -> Path:
    packages = dpkg_packages((rootfs / "var/lib/dpkg/status").read_text())
    missing = [p for p in recipe.all_packages() if p not in packages]
    if missing:
        raise StageError("manifest", f"recipe packages not installed: {', '.join(missing)}")
    python = python_packages(rootfs, recipe.python.venv)
    if "skiff" not in python:
        raise StageError("manifest", f"skiff is not installed in the image's {recipe.python.venv}")
    files = {"rootfs": rootfs_tar, **({"qcow2": qcow2} if qcow2 else {})}
    manifest = {
        "format": FORMAT,
        "name": recipe.name,
        "inputs": inputs,
        "recipe_packages": recipe.all_packages(),
        "packages": packages,
        "python_packages": python,
        "artifacts": {kind: {"file": path.name, "sha256": sha256_file(path),
                             "bytes": path.stat().st_size} for kind, path in files.items()},
    }
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    lines = [f"{_hash(p, hashlib.sha512())}  {p.name}" for p in (*files.values(), path)]
    (out_dir / "sha512sum.txt").write_text("\n".join(lines) + "\n")
    return path


def verify(out_dir: Path, recipe: Recipe) -> list[str]:
    """Problems with a build in out_dir against recipe (an empty list: all good)."""
    problems: list[str] = []
    try:
        data = json.loads((Path(out_dir) / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        return [f"no readable manifest.json in {out_dir}: {exc}"]
    packages = data.get("packages", {})
    for name in recipe.all_packages():
        if not packages.get(name, {}).get("version"):
            problems.append(f"recipe package {name} is not in the image with a version")
    for kind, entry in data.get("artifacts", {}).items():
        path = Path(out_dir) / entry["file"]
        if not path.exists():
            problems.append(f"{kind}: {entry['file']} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{kind}: {entry['file']} does not match its sha256")
    sums = Path(out_dir) / "sha512sum.txt"
    if not sums.exists():
        problems.append("sha512sum.txt is missing")
    else:
        for line in sums.read_text().splitlines():
            digest, _, name = line.partition("  ")
            target = Path(out_dir) / name
            if not target.exists() or _hash(target, hashlib.sha512()) != digest:
                problems.append(f"sha512sum.txt: {name} does not match")
    return problems


def inputs_changed(out_dir: Path, recipe_path: Path) -> list[str]:
    """What differs between the inputs a build in out_dir recorded and the recipe and
    overlay now (an empty list: a build now would have the same recipe and overlay).
    Used to skip a build whose output exists (``skiff image verify --same-inputs``)."""
    from appliances.image.recipe import OVERLAY, tree_hash

    try:
        inputs = json.loads((Path(out_dir) / "manifest.json").read_text())["inputs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"no readable inputs in {out_dir}/manifest.json: {exc}"]
    changed = []
    if inputs.get("recipe_sha256") != hashlib.sha256(Path(recipe_path).read_bytes()).hexdigest():
        changed.append(f"the recipe {recipe_path} changed since the build")
    if inputs.get("overlay_sha256") != tree_hash(OVERLAY):
        changed.append(f"the overlay {OVERLAY} changed since the build")
    return changed
