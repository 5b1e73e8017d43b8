"""The system-VM image: its recipe (images/systemvm.toml) and the build pipeline.

Entry points for other code: ``recipe.load()``, ``build.build_image()`` and
``build.artifacts()`` (the paths of the last build's outputs).
"""
