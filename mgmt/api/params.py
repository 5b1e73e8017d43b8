"""Request parameters as CloudStack reads them.

GET query and POST form are merged (values URL-decoded); a few names are
case-insensitive (clients disagree on ``apiKey``/``apikey``); the literal
``None`` that libcloud sends for unset values means absent; maps and lists of
objects arrive as ``name[0].key=value``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: Names matched case-insensitively, with the spelling used internally.
SPECIAL = {
    name.lower(): name
    for name in ("apiKey", "signature", "signatureVersion", "expires", "command", "response",
                 "sessionkey")
}
_INDEXED = re.compile(r"^([A-Za-z0-9_]+)\[(\d+)\]\.([A-Za-z0-9_]+)$")


class Params:
    """The raw parameters of one request: exact names for signing, folded names to read."""

    def __init__(self, pairs: Iterable[tuple[str, str]]):
        self.raw: dict[str, str] = {}
        for name, value in pairs:
            self.raw[name] = value  # the last value wins, as in CloudStack
        self._folded: dict[str, str] = {}
        for name, value in self.raw.items():
            if value == "None":
                continue
            key = SPECIAL.get(name.lower(), name).lower()
            self._folded[key] = value

    def get(self, name: str) -> str | None:
        """A parameter by name (case-insensitive); None when absent or the string 'None'."""
        return self._folded.get(name.lower())

    def has(self, name: str) -> bool:
        return name.lower() in self._folded

    def indexed(self, name: str) -> list[dict[str, str]]:
        """``name[0].key=v&name[0].value=w`` as ``[{"key": "v", "value": "w"}]``."""
        entries: dict[int, dict[str, str]] = {}
        prefix = name.lower()
        for key, value in self._folded.items():
            m = _INDEXED.match(key)
            if m and m.group(1) == prefix:
                entries.setdefault(int(m.group(2)), {})[m.group(3)] = value
        return [entries[i] for i in sorted(entries)]

    def for_signing(self) -> Mapping[str, str]:
        return self.raw
