"""Declared checksums in CloudStack's forms; upload signatures and extract tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from appliances.storage.checksum import Checksum, new_hasher, normalise, parse_checksum
from appliances.storage.signing import (
    SignatureError,
    UploadMetadata,
    check_extract_token,
    check_upload,
    extract_token,
    format_expires,
    parse_expires,
    upload_params,
)

KEY = "k" * 40
DATA = b"some image bytes"


@pytest.mark.parametrize("alg", ["md5", "sha1", "sha224", "sha256", "sha384", "sha512"])
def test_bare_hex_length_names_the_algorithm(alg):
    digest = hashlib.new(alg, DATA).hexdigest()
    checksum = parse_checksum(digest.upper())
    assert checksum.hashlib_name == alg
    assert checksum.matches(hashlib.new(alg, DATA).hexdigest())
    assert new_hasher(checksum).name == alg


@pytest.mark.parametrize(
    "text,alg",
    [
        ("{SHA-512}", "SHA-512"),
        ("{sha-256}", "SHA-256"),
        ("{MD5}", "MD5"),
        ("{SHA256}", "SHA-256"),
        ("{SHA-1}", "SHA-1"),
    ],
)
def test_braced_forms(text, alg):
    digest = hashlib.new(alg.replace("-", "").lower(), DATA).hexdigest()
    assert normalise(f"{text}{digest}") == f"{{{alg}}}{digest}"


@pytest.mark.parametrize(
    "bad,why",
    [
        ("{SHA-512}" + "ab" * 32, "has 128 hex digits, not 64"),
        ("{CRC32}" + "ab" * 16, "unknown checksum algorithm"),
        ("ab" * 20 + "a", "names no algorithm"),
        ("xyz", "hex digits"),
        ("", "hex digits"),
    ],
)
def test_bad_checksums_name_the_problem(bad, why):
    with pytest.raises(ValueError, match=why):
        parse_checksum(bad)


def test_no_declared_checksum_still_hashes_sha256():
    assert new_hasher(None).name == "sha256"
    assert str(Checksum("MD5", "ab" * 16)) == "{MD5}" + "ab" * 16


# -- upload signatures ---------------------------------------------------------------------

META = UploadMetadata(id="tmpl-1", format="QCOW2", max_bytes=1 << 30, checksum=None)
URL = "https://203.0.113.5/upload/tmpl-1"


def test_signature_is_cloudstacks_hmac_sha1_of_metadata_url_expires():
    params = upload_params(KEY, URL, META, ttl=600, now=1_000_000)
    assert params.expires == "1970-01-12T13:56:40.000Z"
    want = base64.b64encode(
        hmac.new(
            KEY.encode(), (params.metadata + URL + params.expires).encode(), hashlib.sha1
        ).digest()
    ).decode()
    assert params.signature == want
    assert params.headers() == {
        "X-signature": want,
        "X-metadata": params.metadata,
        "X-expires": params.expires,
    }
    assert (
        check_upload(KEY, URL, params.signature, params.metadata, params.expires, now=1_000_000)
        == META
    )


def test_expired_upload_is_refused():
    params = upload_params(KEY, URL, META, ttl=600, now=1_000_000)
    with pytest.raises(SignatureError, match="expired"):
        check_upload(KEY, URL, params.signature, params.metadata, params.expires, now=1_000_600)


@pytest.mark.parametrize("change", ["key", "url", "metadata", "expires", "signature"])
def test_any_change_breaks_the_signature(change):
    p = upload_params(KEY, URL, META, ttl=600, now=1_000_000)
    args = {
        "key": KEY,
        "url": URL,
        "signature": p.signature,
        "metadata": p.metadata,
        "expires": p.expires,
    }
    if change == "metadata":
        args["metadata"] = UploadMetadata("tmpl-1", "QCOW2", 1 << 40).encode()
    elif change == "expires":
        args["expires"] = format_expires(2_000_000)
    elif change == "url":
        args["url"] = URL.replace("tmpl-1", "tmpl-2")
    else:
        args[change] = args[change][:-2] + "xx"
    with pytest.raises(SignatureError, match="signature validation failed"):
        check_upload(
            args["key"],
            args["url"],
            args["signature"],
            args["metadata"],
            args["expires"],
            now=1_000_000,
        )


def test_missing_headers_and_bad_expires():
    with pytest.raises(SignatureError, match="all required"):
        check_upload(KEY, URL, "", "m", "e")
    with pytest.raises(SignatureError, match="ISO 8601"):
        parse_expires("tomorrow")
    with pytest.raises(SignatureError, match="time zone"):
        parse_expires("2030-01-01T00:00:00")
    assert parse_expires("2030-01-01T00:00:00.000+0000") == parse_expires("2030-01-01T00:00Z")


# -- extract tokens ------------------------------------------------------------------------


def test_extract_token_round_trip_and_expiry():
    token = extract_token(KEY, "tmpl-1", 2_000)
    assert check_extract_token(KEY, token, now=1_999) == "tmpl-1"
    with pytest.raises(SignatureError, match="expired"):
        check_extract_token(KEY, token, now=2_000)


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        "abc.def",
        "e30.",
        "eyJpZCI6InRtcGwtMSIsImV4cCI6OTk5OTk5OTk5OX0.AAAA",
    ],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(SignatureError):
        check_extract_token(KEY, token, now=0)


def test_token_for_one_image_cannot_be_edited_to_another():
    token = extract_token(KEY, "tmpl-1", 2_000)
    other = extract_token(KEY, "tmpl-2", 2_000)
    forged = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(SignatureError, match="signature"):
        check_extract_token(KEY, forged, now=0)
    with pytest.raises(SignatureError, match="signature"):
        check_extract_token("x" * 40, token, now=0)
