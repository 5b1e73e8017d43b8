"""API errors: HTTP status equals errorcode, as CloudStack answers them."""

from __future__ import annotations

#: errorcode -> CloudStack's cserrorcode (the Java exception class id clients log).
CS_ERROR_CODES = {
    401: 9999, 405: 9999, 429: 9999, 430: 9999, 431: 4350, 432: 9999, 530: 4250,
    531: 4365, 532: 4370, 533: 4375, 534: 4380, 535: 4385, 536: 4390, 537: 4395,
}


class ApiError(Exception):
    """An error answer. ``text`` is for people: say which parameter, which value, why."""

    def __init__(self, code: int, text: str):
        self.code = code
        self.cserrorcode = CS_ERROR_CODES.get(code, 9999)
        self.text = text
        super().__init__(f"{code}: {text}")


def unauthorized(text: str = "unable to verify user credentials and/or request signature"):
    return ApiError(401, text)


def param_error(text: str) -> ApiError:
    return ApiError(431, text)


def malformed(text: str) -> ApiError:
    return ApiError(430, text)


def unsupported(text: str) -> ApiError:
    return ApiError(432, text)


def internal(text: str) -> ApiError:
    return ApiError(530, text)
