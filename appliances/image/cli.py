"""`skiff image`: build the system-VM image, check a build, show where it is."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="build and check the system-VM image",
                       description="The one system-VM image (images/systemvm.toml).")
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    b = isub.add_parser("build", help="build the image (root; mmdebstrap, qemu-utils, ...)",
                        description="recipe -> wheels -> root file system -> customize -> "
                        "archive -> qcow2 -> manifest, into build/out/.")
    _common(b)
    b.add_argument("--cache", type=Path, help="package and wheel cache "
                   "(default /var/cache/skiff-image or $SKIFF_IMAGE_CACHE)")
    b.add_argument("--mirror", help="Debian mirror URL (default: mmdebstrap's for the suite)")
    b.add_argument("--no-qcow2", action="store_true", help="only the root file system archive")
    b.add_argument("--keep-work", action="store_true", help="keep build/out/work (rootfs dir)")
    b.add_argument("--fresh-base", action="store_true",
                   help="run mmdebstrap even when the cache has a base root file system "
                   "with the same inputs (one older than 7 days is rebuilt anyway)")
    b.set_defaults(func=_build)
    v = isub.add_parser("verify", help="check a build's manifest and hashes against the recipe")
    _common(v)
    v.add_argument("--same-inputs", action="store_true",
                   help="also require the recipe and overlay to be those the build "
                   "recorded (a build now would be the same: tools skip it then)")
    v.set_defaults(func=_verify)
    s = isub.add_parser("show", help="print the last build's artifacts as JSON")
    _common(s)
    s.set_defaults(func=_show)
    r = isub.add_parser("roots", help="list (or prune) the unpacked root file systems that "
                        "lab appliances run from",
                        description="The lab runtime unpacks each image's root file system "
                        "archive once, into a folder named by its sha256 under "
                        "/var/lib/skiff/image-roots ($SKIFF_IMAGE_ROOTS). --prune removes "
                        "those no running appliance uses.")
    r.add_argument("--prune", action="store_true", help="remove the unused ones")
    r.set_defaults(func=_roots)


def _common(p: argparse.ArgumentParser) -> None:
    from appliances.image.build import DEFAULT_OUT
    from appliances.image.recipe import DEFAULT_RECIPE

    p.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE, help="the recipe (TOML)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")


def _build(args: argparse.Namespace) -> int:
    from appliances.image.build import DEFAULT_CACHE, BuildOptions, build_image
    from appliances.image.recipe import RecipeError
    from appliances.image.stages import StageError

    opts = BuildOptions(recipe_path=args.recipe, out_dir=args.out,
                        cache_dir=args.cache or DEFAULT_CACHE, mirror=args.mirror,
                        qcow2=not args.no_qcow2, keep_work=args.keep_work,
                        fresh_base=args.fresh_base)
    try:
        result = build_image(opts)
    except (StageError, RecipeError) as exc:
        print(f"skiff image build: {exc}", file=sys.stderr)
        return 1
    for path in (result.rootfs, result.qcow2, result.manifest, result.sha512sums):
        if path:
            print(path)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from appliances.image.manifest import inputs_changed, verify
    from appliances.image.recipe import RecipeError, load

    try:
        problems = verify(args.out, load(args.recipe))
        if args.same_inputs:
            problems += inputs_changed(args.out, args.recipe)
    except RecipeError as exc:
        print(f"skiff image verify: {exc}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"skiff image verify: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.out}: the manifest matches the recipe and every artifact its hash")
    return 1 if problems else 0


def _show(args: argparse.Namespace) -> int:
    from appliances.image.build import artifacts

    try:
        a = artifacts(args.out)
    except (OSError, ValueError, KeyError) as exc:
        print(f"skiff image show: no build in {args.out}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: str(v) if v else None for k, v in vars(a).items()}, indent=2))
    return 0


def _roots(args: argparse.Namespace) -> int:
    from appliances.image import imageroot

    if args.prune:
        for name in imageroot.prune():
            print(f"removed {imageroot.ROOTS}/{name}")
        return 0
    used = imageroot.roots_in_use()
    base = Path(imageroot.ROOTS)
    for entry in sorted(base.iterdir()) if base.is_dir() else []:
        print(f"{entry}\t{'in use' if entry.name in used else 'unused'}")
    return 0
