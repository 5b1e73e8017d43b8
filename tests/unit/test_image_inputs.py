"""`skiff image verify --same-inputs`: a build is current while its recipe and overlay are."""

from __future__ import annotations

import hashlib
import json

from appliances.image.manifest import inputs_changed
from appliances.image.recipe import DEFAULT_RECIPE, OVERLAY, tree_hash


def _manifest(out, recipe_sha: str, overlay_sha: str) -> None:
    (out / "manifest.json").write_text(
        json.dumps({"inputs": {"recipe_sha256": recipe_sha, "overlay_sha256": overlay_sha}})
    )


def test_the_recorded_inputs_are_compared_with_the_recipe_and_overlay_now(tmp_path):
    recipe = tmp_path / "systemvm.toml"
    recipe.write_bytes(DEFAULT_RECIPE.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    assert inputs_changed(out, recipe) and "no readable inputs" in inputs_changed(out, recipe)[0]
    _manifest(out, hashlib.sha256(recipe.read_bytes()).hexdigest(), tree_hash(OVERLAY))
    assert inputs_changed(out, recipe) == []
    recipe.write_text(recipe.read_text() + "\n# a change\n")
    assert [c for c in inputs_changed(out, recipe) if "recipe" in c]
    _manifest(out, hashlib.sha256(recipe.read_bytes()).hexdigest(), "0" * 64)
    assert [c for c in inputs_changed(out, recipe) if "overlay" in c]
