"""One image build per test session, shared by the image tests.

SKIFF_IMAGE_TESTS=0 skips them; SKIFF_IMAGE_OUT=<dir> uses a build already in
<dir> (e.g. build/out after `make image`) instead of building one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from appliances.image.disk import TOOLS


def _skip_reason() -> str | None:
    if os.environ.get("SKIFF_IMAGE_TESTS") == "0":
        return "SKIFF_IMAGE_TESTS=0"
    if os.geteuid() != 0:
        return "the image build needs root"
    missing = [t for t in ("mmdebstrap", "zstd", *TOOLS)
               if shutil.which(t) is None and not Path(t).exists()]
    if missing:
        return f"image tools missing ({', '.join(missing)}): run make image-deps"
    return None


@pytest.fixture(scope="session")
def built_image(tmp_path_factory):
    from appliances.image.build import BuildOptions, artifacts, build_image

    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    existing = os.environ.get("SKIFF_IMAGE_OUT")
    if existing:
        return artifacts(Path(existing))
    out = tmp_path_factory.mktemp("image-out")
    return build_image(BuildOptions(out_dir=out))


@pytest.fixture(scope="session")
def unpacked_rootfs(built_image, tmp_path_factory):
    from appliances.image.labrun import unpack

    root = tmp_path_factory.mktemp("image-rootfs")
    root.chmod(0o755)
    unpack(built_image.rootfs, root)
    yield root
    shutil.rmtree(root, ignore_errors=True)
