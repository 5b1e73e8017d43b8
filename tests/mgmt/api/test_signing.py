"""Signatures as CloudStack defines them, and as real clients compute them."""

from __future__ import annotations

from cs.client import CloudStack

from mgmt.api import signing

SECRET = "s3cr3t-KEY"


def _cs_signed(params: dict[str, str]) -> dict[str, str]:
    data = dict(params)
    CloudStack("http://x", key="k", secret=SECRET)._sign(data)
    return data


def test_canonical_form_matches_the_reference_algorithm():
    params = {"command": "listZones", "apiKey": "ABC", "response": "json", "name": "a b*~"}
    # Sorted case-sensitively, Java-encoded (space -> %20, '*' kept, '~' -> %7E), lower-cased.
    assert signing.canonical(params) == (
        "apikey=abc&command=listzones&name=a%20b*%7e&response=json"
    )


def test_cs_client_signatures_verify():
    params = {"command": "listZones", "apiKey": "ABC", "response": "json",
              "keyword": "tilde~ and [brackets]", "signatureVersion": "3",
              "expires": "2026-11-21T05:42:57+0000"}
    signed = _cs_signed(params)
    assert signing.verify(params, SECRET, signed["signature"])


def test_wrong_secret_and_changed_parameter_fail():
    params = {"command": "listZones", "apiKey": "ABC", "response": "json"}
    sig = signing.sign(params, SECRET)
    assert signing.verify(params, SECRET, sig)
    assert not signing.verify(params, "other", sig)
    assert not signing.verify({**params, "response": "xml"}, SECRET, sig)


def test_libcloud_variant_sorted_by_lower_case_name():
    params = {"command": "listZones", "apiKey": "ABC", "Zname": "x[0]", "aname": "y"}
    text = signing.canonical(params, signing._libcloud_encode, str.lower)
    sig = signing._digest(text, SECRET)
    assert signing.verify(params, SECRET, sig)


def test_expires_format():
    when = signing.parse_expires("2026-11-21T05:42:57+0000")
    assert when.year == 2026 and when.utcoffset().total_seconds() == 0
