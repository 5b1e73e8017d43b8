"""The image recipe: one TOML file (images/systemvm.toml), validated here.

The model refuses what would make an unsafe or unbuildable image: a package
name apt would read as a pattern, a user with a password, a unit name with
shell characters, a sysctl key that is not a dotted name.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO / "images" / "systemvm.toml"
OVERLAY = REPO / "images" / "overlay"

_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_UNIT = re.compile(r"[A-Za-z0-9@_.:-]+\.(service|socket|timer|target|path|mount)")
_SYSCTL = re.compile(r"[a-z0-9_]+(\.[A-Za-z0-9_-]+)+")
_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class RecipeError(ValueError):
    """The recipe cannot be read or is invalid; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Python(_Strict):
    venv: str = "/opt/skiff"

    @field_validator("venv")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._-]+)+", v):
            raise ValueError("must be an absolute path of plain names")
        return v


class Initramfs(_Strict):
    compress: Literal["zstd", "gzip", "xz", "lz4"] = "zstd"
    modules: Literal["most", "netboot"] = "most"


class Disk(_Strict):
    boot_mib: int = Field(160, ge=64, le=1024)
    root_mib: int = Field(2048, ge=512, le=65536)
    kernel_cmdline: str = "ro console=ttyS0,115200n8"

    @field_validator("kernel_cmdline")
    @classmethod
    def _cmdline(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9 ,._=/:-]*", v) or "root=" in v:
            raise ValueError("plain words only, and no root= (the builder sets it)")
        return v


class User(_Strict):
    name: str
    #: Only "locked": the image has no passwords at all.
    password: Literal["locked"] = "locked"
    system: bool = False
    shell: str = "/usr/sbin/nologin"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("not a valid user name")
        return v


class Services(_Strict):
    enable: list[str] = []
    disable: list[str] = []
    mask: list[str] = []

    @field_validator("enable", "disable", "mask")
    @classmethod
    def _units(cls, v: list[str]) -> list[str]:
        bad = [u for u in v if not _UNIT.fullmatch(u)]
        if bad:
            raise ValueError(f"not unit names: {', '.join(bad)}")
        return v


class Recipe(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,40}$")
    suite: Literal["bookworm"] = "bookworm"
    architecture: Literal["amd64"] = "amd64"
    variant: Literal["apt", "minbase", "essential"] = "apt"
    components: list[Literal["main", "contrib", "non-free", "non-free-firmware"]] = ["main"]
    mirror: str | None = Field(None, pattern=r"^(https?|file)://[A-Za-z0-9._~:/@%+-]+$")
    hostname: str = Field("systemvm", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    packages: dict[str, list[str]]
    python: Python = Python()
    initramfs: Initramfs = Initramfs()
    disk: Disk = Disk()
    sysctl: dict[str, str] = {}
    users: list[User] = []
    services: Services = Services()

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        bad = [p for group in v.values() for p in group if not _PACKAGE.fullmatch(p)]
        if bad:
            raise ValueError(f"not Debian package names: {', '.join(bad)}")
        if not any(v.values()):
            raise ValueError("lists no package")
        return v

    @field_validator("sysctl")
    @classmethod
    def _sysctl(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _SYSCTL.fullmatch(key):
                raise ValueError(f"{key!r} is not a sysctl name")
            if not re.fullmatch(r"[A-Za-z0-9 ._:-]+", value):
                raise ValueError(f"{key}: value {value!r} has characters a sysctl never needs")
        return v

    def all_packages(self) -> list[str]:
        """Every package the recipe names, sorted and without duplicates."""
        return sorted({p for group in self.packages.values() for p in group})

    def sysctl_conf(self) -> str:
        lines = ["# written by the image build from images/systemvm.toml"]
        lines += [f"{key} = {value}" for key, value in sorted(self.sysctl.items())]
        return "\n".join(lines) + "\n"


def load(path: Path = DEFAULT_RECIPE) -> Recipe:
    """Read and validate a recipe; RecipeError names the file and every bad field."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise RecipeError(f"{path}: {problems}") from exc


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_hash(root: Path) -> str:
    """sha256 over the overlay's relative paths, modes and contents (sorted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        digest.update(f"{rel}\0{path.stat().st_mode & 0o7777:o}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
