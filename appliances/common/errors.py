"""Errors that carry enough detail for an operator to act on them."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from appliances.common.types import PATTERN_HINTS


@dataclass(frozen=True)
class FieldError:
    """One problem at one place in a document, e.g. ``port_forwards.3.public_start``."""

    loc: str
    msg: str

    def as_dict(self) -> dict[str, str]:
        return {"loc": self.loc, "msg": self.msg}


def loc_str(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(document)"


class DocumentError(ValueError):
    """A document was rejected; ``errors`` names every bad field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        lines = "; ".join(f"{e.loc}: {e.msg}" for e in errors[:20])
        more = f" (and {len(errors) - 20} more)" if len(errors) > 20 else ""
        super().__init__(f"invalid document: {lines}{more}")

    @classmethod
    def from_validation_error(cls, exc: ValidationError) -> DocumentError:
        errors = []
        for err in exc.errors(include_url=False):
            msg = err["msg"]
            if err["type"] == "string_pattern_mismatch":
                hint = PATTERN_HINTS.get(err.get("ctx", {}).get("pattern", ""))
                if hint:
                    msg = f"must be {hint}"
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            # Show the offending input for scalar values, truncated: helps find it.
            value = err.get("input")
            if isinstance(value, str | int | float) and err["type"] not in ("missing",):
                shown = repr(value)
                msg = f"{msg} (got {shown[:80]}{'...' if len(shown) > 80 else ''})"
            errors.append(FieldError(loc_str(err["loc"]), msg))
        return cls(errors)


class ApplyError(RuntimeError):
    """Applying a valid document failed in a daemon or the kernel.

    ``service`` names the failing part, ``output`` is the checker's or the
    command's own output, passed to the client unchanged.
    """

    def __init__(self, service: str, message: str, output: str = ""):
        self.service = service
        self.output = output
        super().__init__(f"{service}: {message}")
