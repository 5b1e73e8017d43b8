"""Jinja2 environments that refuse to write anything unsafe for the target format.

Documents are validated before rendering, but a template is the last line of
defence: every ``{{ value }}`` passes ``finalize``, which accepts only the
characters that are inert in that format. Values that need quoting go through a
format's own escaping filter, which returns :class:`Escaped`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from jinja2 import Environment, PackageLoader, StrictUndefined


class Escaped(str):
    """A string already made safe by a format's escaping filter."""


class RenderError(ValueError):
    pass


def make_environment(
    package: str,
    safe_chars: str,
    filters: dict[str, Callable] | None = None,
) -> Environment:
    """An environment for one config format.

    ``safe_chars`` is a regex character class body (e.g. ``A-Za-z0-9._``) of
    characters allowed in a plain interpolated value.
    """
    allowed = re.compile(f"[{safe_chars}]*")

    def finalize(value: object) -> str:
        if isinstance(value, Escaped):
            return value
        text = str(value)
        if not allowed.fullmatch(text):
            raise RenderError(f"refusing to render unsafe value {text[:80]!r}")
        return text

    env = Environment(
        loader=PackageLoader(package, "templates"),
        undefined=StrictUndefined,
        finalize=finalize,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(filters or {})
    return env
