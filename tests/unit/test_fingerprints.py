"""Document fingerprints kept in the database are keyed: without the CA's key they
say nothing about the secrets a document carries."""

from __future__ import annotations

import hashlib
import json

from mgmt.orchestration.fingerprints import Fingerprints

DOC = {"generation": 7, "vpn": {"psk": "weak-guess"}, "nat": []}


def _plain(data: dict) -> str:
    body = {k: v for k, v in data.items() if k != "generation"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def test_the_generation_does_not_change_the_fingerprint():
    fp = Fingerprints(b"ca key")
    assert fp.document(DOC) == fp.document({**DOC, "generation": 8})
    assert fp.document(DOC) != fp.document({**DOC, "vpn": {"psk": "other"}})


def test_without_the_key_a_guess_cannot_be_checked():
    ours, theirs = Fingerprints(b"ca key"), Fingerprints(b"another key")
    assert ours.document(DOC) != theirs.document(DOC)
    assert ours.document(DOC) != _plain(DOC)
    body = json.dumps(DOC).encode()
    assert ours.sent(body) != hashlib.sha256(body).hexdigest()
    assert ours.sent(body) != theirs.sent(body)


def test_what_an_agent_reports_matches_what_was_sent():
    fp = Fingerprints(b"ca key")
    body = json.dumps(DOC).encode()
    assert fp.reported(hashlib.sha256(body).hexdigest()) == fp.sent(body)
    assert fp.reported(None) is None and fp.reported("") is None
