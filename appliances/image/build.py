"""The image build: recipe -> wheels -> root file system -> customize -> archive -> qcow2
-> manifest. ``build_image()`` runs it; ``artifacts()`` finds the last build's outputs.

Everything Debian gives goes through mmdebstrap (its package downloads are kept
in the cache directory between runs); the project's wheel and its dependencies'
wheels are made on this machine (the dependencies pinned to the versions this
environment runs, cached too) and installed offline into a venv in the image.
The image's Python is the same minor version as the builder's (3.11 on Debian
12), so the builder's wheels fit it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from appliances.image import disk
from appliances.image.manifest import write_manifest
from appliances.image.recipe import DEFAULT_RECIPE, OVERLAY, REPO, Recipe, load, tree_hash
from appliances.image.stages import Progress, StageError

DEFAULT_OUT = REPO / "build" / "out"
DEFAULT_CACHE = Path(os.environ.get("SKIFF_IMAGE_CACHE", "/var/cache/skiff-image"))
#: What a copy of the project needs to build its wheel (see pyproject.toml).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "appliances", "mgmt")
#: zstd level of the rootfs archive: -9 is within a few per cent of -12's size at
#: about half its CPU time.
ZSTD_LEVEL = 9
EATMYDATA_HOOKS = Path("/usr/share/mmdebstrap/hooks/eatmydata")
#: Bump when the base stage changes in a way its command line does not show.
BASE_FORMAT = 1
#: A cached base older than this is built anew (security updates); --fresh-base forces it.
BASE_MAX_AGE_S = 7 * 24 * 3600
#: Cached bases kept (the newest; others are removed when one is stored).
BASE_KEEP = 2
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/lintian/*",
)


@dataclass(frozen=True)
class Artifacts:
    """The outputs of one build (all in ``out_dir``)."""

    out_dir: Path
    rootfs: Path
    qcow2: Path | None
    manifest: Path
    sha512sums: Path

    def manifest_data(self) -> dict:
        return json.loads(self.manifest.read_text())


@dataclass
class BuildOptions:
    recipe_path: Path = DEFAULT_RECIPE
    out_dir: Path = DEFAULT_OUT
    cache_dir: Path = DEFAULT_CACHE
    mirror: str | None = None
    source_date_epoch: int | None = None
    qcow2: bool = True
    keep_work: bool = False
    #: Build the base root file system with mmdebstrap even when the cache has it.
    fresh_base: bool = False
    out: object = sys.stderr


@dataclass
class _Build:
    opts: BuildOptions
    recipe: Recipe
    epoch: int
    progress: Progress
    inputs: dict = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return self.opts.out_dir / "work"

    @property
    def rootfs(self) -> Path:
        return self.work / "rootfs"

    @property
    def wheels(self) -> Path:
        return self.work / "wheels"

    def env(self) -> dict[str, str]:
        return {"SOURCE_DATE_EPOCH": str(self.epoch), "LC_ALL": "C.UTF-8", "TZ": "UTC"}


def artifacts(out_dir: Path = DEFAULT_OUT) -> Artifacts:
    """The last build's outputs in out_dir; FileNotFoundError if there is none."""
    manifest = Path(out_dir) / "manifest.json"
    data = json.loads(manifest.read_text())
    files = data["artifacts"]
    qcow2 = files.get("qcow2")
    return Artifacts(Path(out_dir), Path(out_dir) / files["rootfs"]["file"],
                     Path(out_dir) / qcow2["file"] if qcow2 else None, manifest,
                     Path(out_dir) / "sha512sum.txt")


def build_image(opts: BuildOptions | None = None) -> Artifacts:
    """Build the image; raises StageError naming the failed stage and why."""
    opts = opts or BuildOptions()
    recipe = load(opts.recipe_path)
    if opts.mirror:
        recipe = recipe.model_copy(update={"mirror": opts.mirror})
    epoch = opts.source_date_epoch or _default_epoch()
    progress = Progress(total=7 + 2 * int(opts.qcow2), log_dir=opts.out_dir / "logs",
                        out=opts.out)
    b = _Build(opts, recipe, epoch, progress)
    if os.geteuid() != 0:
        raise StageError("inputs", "building the image needs root (mmdebstrap's root mode)")
    shutil.rmtree(progress.log_dir, ignore_errors=True)
    with progress.stage("inputs", f"{recipe.name} ({recipe.suite}/{recipe.architecture}), "
                        f"SOURCE_DATE_EPOCH={epoch}"):
        _inputs(b)
    with progress.stage("wheels", "the project's wheel and its dependencies"):
        _wheels(b)
    with progress.stage("rootfs", f"the base: {len(recipe.all_packages())} packages "
                        f"(mmdebstrap, or the cached base in {opts.cache_dir / 'base'})"):
        _rootfs(b)
    with progress.stage("venv", f"{recipe.python.venv} with the project's wheels"):
        _venv(b)
    with progress.stage("customize", "overlay, sysctls, users, services"):
        _customize(b)
    name = recipe.name
    rootfs_tar = opts.out_dir / f"{name}-rootfs.tar.zst"
    qcow2 = opts.out_dir / f"{name}.qcow2"
    for stale in (rootfs_tar, qcow2, opts.out_dir / "manifest.json",
                  opts.out_dir / "sha512sum.txt"):
        stale.unlink(missing_ok=True)
    # The archive compresses (zstd, every core) while the qcow2 is made (mostly one
    # core): they only read the root directory.
    with progress.stage("archive", f"{rootfs_tar.name} (compressed while the qcow2 is made)"):
        archive = _Archive(b, rootfs_tar)
        if not opts.qcow2:
            archive.wait()
    if opts.qcow2:
        with progress.stage("qcow2", f"{qcow2.name} (MBR, FAT /boot with SYSLINUX, ext4 root)"):
            try:
                disk.make_qcow2(progress, recipe, b.rootfs, b.work / "disk", qcow2, epoch)
            except BaseException:
                archive.kill()
                raise
        with progress.stage("archive-wait", f"the rest of {rootfs_tar.name}"):
            archive.wait()
    with progress.stage("manifest", "manifest.json and sha512sum.txt"):
        write_manifest(b.rootfs, recipe, opts.out_dir, rootfs_tar,
                       qcow2 if opts.qcow2 else None, b.inputs)
    (opts.out_dir / "timings.json").write_text(json.dumps(progress.timings, indent=2) + "\n")
    if not opts.keep_work:
        shutil.rmtree(b.work, ignore_errors=True)
    result = artifacts(opts.out_dir)
    progress.say(f"image built in {sum(progress.timings.values()):.0f} s: {opts.out_dir}")
    return result


def _default_epoch() -> int:
    """SOURCE_DATE_EPOCH, else the last commit's time, else the recipe's mtime."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    res = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
                         capture_output=True, text=True, check=False)
    if res.returncode == 0 and res.stdout.strip().isdigit():
        return int(res.stdout.strip())
    return int(DEFAULT_RECIPE.stat().st_mtime)


def _inputs(b: _Build) -> None:
    if sys.version_info[:2] != (3, 11):
        raise StageError("inputs", f"the builder runs Python {sys.version.split()[0]}; the "
                         "image's is 3.11, and the vendored wheels must fit it")
    for tool in ("mmdebstrap", "tar", "zstd") + (disk.TOOLS if b.opts.qcow2 else ()):
        if shutil.which(tool) is None and not Path(tool).exists():
            raise StageError("inputs", f"{tool} is missing: run `make image` (it installs "
                             "the build tools) or apt-get install the image packages")
    if b.work.exists():
        shutil.rmtree(b.work)
    b.work.mkdir(parents=True)
    for sub in ("apt", "lists", "wheels", "base"):
        (b.opts.cache_dir / sub).mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    b.inputs.update({
        "recipe": str(b.opts.recipe_path),
        "recipe_sha256": hashlib.sha256(Path(b.opts.recipe_path).read_bytes()).hexdigest(),
        "overlay_sha256": tree_hash(OVERLAY),
        "source_date_epoch": b.epoch,
        "git_commit": commit or None,
        "suite": b.recipe.suite,
        "variant": b.recipe.variant,
    })


def _wheels(b: _Build) -> None:
    src = b.work / "src"
    for name in WHEEL_SOURCES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "node_modules",
                                                           "*.egg-info"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, src / name)
    b.wheels.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    b.progress.run([*pip, "wheel", "-q", "--no-deps", "--wheel-dir", str(b.wheels), str(src)],
                   env=b.env())
    own = sorted(b.wheels.glob("skiff-*.whl"))
    if len(own) != 1:
        raise StageError("wheels", f"expected one skiff wheel, found {[p.name for p in own]}")
    constraints = b.work / "constraints.txt"
    pins = sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                  if d.metadata["Name"] and d.metadata["Name"].lower() != "skiff")
    constraints.write_text("\n".join(pins) + "\n")
    cache = b.opts.cache_dir / "wheels"
    base = [*pip, "wheel", "-q", "--wheel-dir", str(b.wheels), "--find-links", str(b.wheels),
            "--find-links", str(cache), "--constraint", str(constraints), str(own[0])]
    try:
        b.progress.run([*base, "--no-index"], env=b.env())  # all cached: no network
        b.inputs["wheels_from"] = "cache"
    except StageError:
        b.progress.run(base, env=b.env())
        b.inputs["wheels_from"] = "index"
    for wheel in b.wheels.glob("*.whl"):
        if wheel.name != own[0].name and not (cache / wheel.name).exists():
            shutil.copy2(wheel, cache / wheel.name)
    b.inputs["wheel"] = {"file": own[0].name, "sha256": _sha256(own[0])}
    b.inputs["dependency_wheels"] = {
        w.name: _sha256(w) for w in sorted(b.wheels.glob("*.whl")) if w != own[0]}


def _hook(b: _Build, name: str, body: str) -> str:
    """A hook script for mmdebstrap (it runs executables with the root dir as $1)."""
    path = b.work / "hooks" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\nset -eu\n" + body)
    path.chmod(0o755)
    return str(path)


def _mmdebstrap_argv(b: _Build) -> list[str]:
    """mmdebstrap's command for the base root file system: the recipe's packages, with
    Debian's own Python but not the project (that goes in after, see ``_venv``)."""
    r = b.recipe
    apt_cache = b.opts.cache_dir / "apt"
    lists_cache = b.opts.cache_dir / "lists"
    initramfs = _hook(b, "initramfs", (
        'mkdir -p "$1/etc/initramfs-tools/conf.d"\n'
        f"printf 'MODULES={r.initramfs.modules}\\nCOMPRESS={r.initramfs.compress}\\n' "
        '> "$1/etc/initramfs-tools/conf.d/skiff"\n'))
    argv = [
        "mmdebstrap", "--mode=root", f"--variant={r.variant}",
        f"--architectures={r.architecture}", f"--components={','.join(r.components)}",
        f"--include={','.join(r.all_packages())}",
        "--aptopt=Acquire::Languages \"none\"",
        "--aptopt=APT::Install-Recommends \"false\"",
        *(f"--dpkgopt={opt}" for opt in DPKG_EXCLUDES),
        "--skip=essential/unlink",
        # dpkg without fsync (the image is written out whole at the end anyway)
        *([f"--hook-dir={EATMYDATA_HOOKS}"] if EATMYDATA_HOOKS.is_dir() else []),
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/ \"$1\"/var/lib/apt/lists/",
        f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
        # the indexes too: a warm update then only asks whether they changed
        f"--setup-hook=sync-in {lists_cache} /var/lib/apt/lists/",
        f"--essential-hook={initramfs}",
        f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
        f"--customize-hook=sync-out /var/lib/apt/lists {lists_cache}",
        r.suite, str(b.rootfs),
    ]
    if r.mirror:
        argv.append(r.mirror)
    return argv


def base_key(b: _Build, argv: list[str]) -> str:
    """What the base root file system depends on: mmdebstrap's command (recipe packages,
    suite, architecture, components, mirror, apt and dpkg options, eatmydata) with this
    build's own paths taken out, and the hooks' contents. SOURCE_DATE_EPOCH is left out
    on purpose: it changes with every commit, and the archive clamps mtimes anyway."""
    work, cache = str(b.work), str(b.opts.cache_dir)
    generic = [a.replace(work, "<work>").replace(cache, "<cache>") for a in argv]
    hooks = {p.name: p.read_text() for p in sorted((b.work / "hooks").glob("*"))}
    data = json.dumps({"format": BASE_FORMAT, "argv": generic, "hooks": hooks},
                      sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


def _rootfs(b: _Build) -> None:
    """The base: from the cache when a base with the same inputs is there and younger
    than BASE_MAX_AGE_S (so security updates still arrive), else mmdebstrap, whose
    result is then cached. A rebuild with only code changes so skips mmdebstrap."""
    argv = _mmdebstrap_argv(b)
    key = base_key(b, argv)
    bases = b.opts.cache_dir / "base"
    cached = bases / key
    age = time.time() - cached.stat().st_mtime if cached.is_dir() else None
    fresh = age is not None and age < BASE_MAX_AGE_S and not b.opts.fresh_base
    if fresh:
        b.progress.say(f"    base {key} from the cache ({age / 3600:.1f} h old)")
        _copy_tree(b, cached, b.rootfs)
    else:
        b.progress.run(argv, env=b.env())
        b.progress.say(f"    caching the base as {key}")
        _store_base(b, bases, key)
    b.inputs["base"] = {"key": key, "from_cache": fresh}
    sources = sorted((b.rootfs / "etc/apt").glob("sources.list*"))
    b.inputs["mirror"] = "".join(p.read_text() for p in sources if p.is_file()).strip()


def _copy_tree(b: _Build, source: Path, target: Path) -> None:
    """cp -a: owners, modes, hard links, device nodes and xattrs (file capabilities)."""
    if target.exists():
        shutil.rmtree(target)
    b.progress.run(["cp", "-a", "--reflink=auto", str(source), str(target)])


def _store_base(b: _Build, bases: Path, key: str) -> None:
    """Copy the fresh base into the cache (atomically: a temporary name, then rename),
    keeping the newest BASE_KEEP bases."""
    bases.mkdir(parents=True, exist_ok=True)
    tmp = bases / f".{key}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    _copy_tree(b, b.rootfs, tmp)
    shutil.rmtree(bases / key, ignore_errors=True)
    tmp.rename(bases / key)
    (bases / key).touch()
    others = sorted((d for d in bases.iterdir() if d.is_dir() and d.name != key),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for stale in others[BASE_KEEP - 1:]:
        shutil.rmtree(stale, ignore_errors=True)


def _venv(b: _Build) -> None:
    """The venv, made by the image's own Python, with the wheels installed offline in
    a clean environment (the builder's PIP_* settings must not reach the image's pip).
    The installed modules are byte-compiled as unchecked-hash pycs: the image's files
    never change, so an import need not read and hash each source (agent start-up)."""
    venv = b.recipe.python.venv
    wheels_in_root = b.rootfs / "tmp/wheels"
    shutil.rmtree(wheels_in_root, ignore_errors=True)
    shutil.copytree(b.wheels, wheels_in_root)
    chroot = ["unshare", "--mount", "--propagation", "private", f"--root={b.rootfs}",
              "--mount-proc", "--", "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
              f"SOURCE_DATE_EPOCH={b.epoch}", "LC_ALL=C.UTF-8", "HOME=/root"]
    try:
        b.progress.run([*chroot, "python3", "-m", "venv", venv])
        b.progress.run([*chroot, f"{venv}/bin/pip", "install", "--quiet", "--no-index",
                        "--no-cache-dir", "--disable-pip-version-check",
                        "--root-user-action=ignore", "--find-links", "/tmp/wheels", "skiff"])
        site = f"{venv}/lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages"
        b.progress.run([*chroot, f"{venv}/bin/python", "-m", "compileall", "-q", "-f", "-j0",
                        "--invalidation-mode", "unchecked-hash", site])
    finally:
        shutil.rmtree(wheels_in_root, ignore_errors=True)


def _customize(b: _Build) -> None:
    r, root = b.recipe, b.rootfs
    shutil.copytree(OVERLAY, root, dirs_exist_ok=True, symlinks=True)
    _write(root / "etc/sysctl.d/60-skiff.conf", r.sysctl_conf())
    _write(root / "etc/hostname", f"{r.hostname}\n")
    _write(root / "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{r.hostname}\n")
    _write(root / "etc/resolv.conf", "# the appliance resolves no names itself\n")
    _write(root / "etc/fstab", f"PARTUUID={disk.disk_id(r)}-02\t/\text4\t"
           "defaults,noatime,errors=remount-ro\t0\t1\n")
    _write(root / "etc/skiff/image.json", json.dumps(
        {"name": r.name, "recipe_sha256": b.inputs["recipe_sha256"],
         "wheel": b.inputs["wheel"]["file"], "source_date_epoch": b.epoch}, indent=2) + "\n")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # every copy of the image would share them; made at first SSH start
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    link = root / "usr/local/bin/skiff"
    link.unlink(missing_ok=True)
    link.symlink_to(f"{r.python.venv}/bin/skiff")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    _lock_users(b)
    units = [root / d for d in ("etc/systemd/system", "usr/lib/systemd/system",
                                "lib/systemd/system")]

    def exists(unit: str) -> bool:
        return any((d / unit).exists() for d in units)

    for verb, names in (("disable", r.services.disable), ("mask", r.services.mask),
                        ("enable", r.services.enable)):
        present = [u for u in names if verb == "mask" or exists(u)]
        missing = sorted(set(names) - set(present))
        if missing:
            b.progress.say(f"    {verb}: not in the image, skipped: {', '.join(missing)}")
        if present:
            b.progress.run(["systemctl", f"--root={root}", "--quiet", verb, *present])


def _lock_users(b: _Build) -> None:
    """Lock the recipe's users and refuse an image where anyone has a password."""
    shadow = b.rootfs / "etc/shadow"
    locked = {u.name for u in b.recipe.users}
    lines = []
    for line in shadow.read_text().splitlines():
        fields = line.split(":")
        if fields[0] in locked:
            fields[1] = "!*"
        if fields[1] and fields[1][0] not in "!*":
            raise StageError("customize", f"user {fields[0]} has a password in /etc/shadow")
        lines.append(":".join(fields))
    shadow.write_text("\n".join(lines) + "\n")


class _Archive:
    """A sorted tar with clamped mtimes and numeric owners, piped through zstd, running
    in the background until wait()."""

    def __init__(self, b: _Build, target: Path):
        tar = ["tar", "--create", "--file=-", f"--directory={b.rootfs}", "--sort=name",
               "--numeric-owner", "--format=posix", f"--mtime=@{b.epoch}", "--clamp-mtime",
               "--xattrs", "--xattrs-include=security.capability",
               "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime", "."]
        self.log = b.progress.log_dir / "archive.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **b.env()}
        with self.log.open("ab") as err, target.open("wb") as out:
            self.tar = subprocess.Popen(tar, stdout=subprocess.PIPE, stderr=err, env=env)
            self.zstd = subprocess.Popen(["zstd", "-q", "-T0", f"-{ZSTD_LEVEL}", "-c"],
                                         stdin=self.tar.stdout, stdout=out, stderr=err)
        assert self.tar.stdout is not None
        self.tar.stdout.close()

    def wait(self) -> None:
        tar_rc, zstd_rc = self.tar.wait(), self.zstd.wait()
        if tar_rc or zstd_rc:
            raise StageError("archive", f"tar exited {tar_rc}, zstd {zstd_rc}; see {self.log}")

    def kill(self) -> None:
        for proc in (self.tar, self.zstd):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.write_text(text)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
