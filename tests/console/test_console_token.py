"""Console tokens: sealed, authenticated, bound to one target, short-lived."""

from __future__ import annotations

import base64

import pytest

from appliances.common import console_token as ct

NOW = 1_700_000_000.0


def _issue(key: bytes, **kw):
    args = {
        "instance_id": "vm-1",
        "host": "10.0.0.5",
        "port": 5901,
        "password": "s3cret",
        "now": NOW,
        "ttl_s": 60,
    }
    args.update(kw)
    return ct.issue(key, **args)


def test_a_token_opens_to_what_was_granted():
    key = ct.new_key()
    token, grant = _issue(key)
    opened = ct.open_token(token, [key], now=NOW + 1)
    assert opened == grant
    assert (opened.instance_id, opened.host, opened.port, opened.password) == (
        "vm-1",
        "10.0.0.5",
        5901,
        "s3cret",
    )
    assert opened.expires == NOW + 60


def test_the_token_does_not_show_the_password_or_the_target():
    key = ct.new_key()
    token, _ = _issue(key, password="VeryVisible")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for secret in (b"VeryVisible", b"10.0.0.5", b"vm-1", b"5901"):
        assert secret not in raw


def test_two_tokens_for_the_same_target_differ():
    key = ct.new_key()
    (a, ga), (b, gb) = _issue(key), _issue(key)
    assert a != b and ga.nonce != gb.nonce and ga.session_id != gb.session_id


@pytest.mark.parametrize("position", [0, 1, 5, 17, 30, -1])
def test_a_tampered_token_is_refused(position):
    key = ct.new_key()
    token, _ = _issue(key)
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[position] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(ct.TokenInvalid):
        ct.open_token(forged, [key], now=NOW)


def test_a_token_cut_short_or_garbled_is_refused():
    key = ct.new_key()
    token, _ = _issue(key)
    for bad in (token[:-4], token[:20], "", "!!!" + token[3:], "x" * (ct.MAX_TOKEN_CHARS + 1)):
        with pytest.raises(ct.TokenInvalid):
            ct.open_token(bad, [key], now=NOW)


def test_a_token_for_another_instance_cannot_be_made_without_the_key():
    """Re-sealing under a guessed key changes the key id and fails; splicing the body of
    another token under this header fails the tag."""
    key = ct.new_key()
    mine, _ = _issue(key, instance_id="vm-1")
    other, _ = _issue(key, instance_id="vm-2", port=5902)
    pad = lambda t: t + "=" * (-len(t) % 4)  # noqa: E731
    a = base64.urlsafe_b64decode(pad(mine))
    b = base64.urlsafe_b64decode(pad(other))
    spliced = a[: 1 + ct.KEY_ID_BYTES + ct.IV_BYTES] + b[1 + ct.KEY_ID_BYTES + ct.IV_BYTES :]
    with pytest.raises(ct.TokenInvalid, match="authentication"):
        ct.open_token(base64.urlsafe_b64encode(spliced).decode(), [key], now=NOW)
    attacker, _ = _issue(ct.new_key(), instance_id="vm-2")
    with pytest.raises(ct.TokenInvalid, match="key this proxy does not have"):
        ct.open_token(attacker, [key], now=NOW)


def test_an_expired_token_is_refused():
    key = ct.new_key()
    token, _ = _issue(key, ttl_s=30)
    ct.open_token(token, [key], now=NOW + 29.9)
    with pytest.raises(ct.TokenExpired):
        ct.open_token(token, [key], now=NOW + 30)
    with pytest.raises(ct.TokenExpired):
        ct.open_token(token, [key], now=NOW + 3600)


def test_a_token_from_the_far_future_is_refused():
    key = ct.new_key()
    token, _ = _issue(key, ttl_s=ct.MAX_TTL_S)
    with pytest.raises(ct.TokenInvalid, match="longer"):
        ct.open_token(token, [key], now=NOW - 10)


def test_the_wrong_key_is_refused_and_rotation_accepts_current_and_previous():
    old, new, unrelated = ct.new_key(), ct.new_key(), ct.new_key()
    by_old, _ = _issue(old)
    by_new, _ = _issue(new)
    for token in (by_old, by_new):
        ct.open_token(token, [new, old], now=NOW)
    with pytest.raises(ct.TokenInvalid):
        ct.open_token(by_old, [new], now=NOW)
    with pytest.raises(ct.TokenInvalid):
        ct.open_token(by_new, [unrelated], now=NOW)


def test_a_key_whose_id_collides_still_fails_authentication(monkeypatch):
    a, b = ct.new_key(), ct.new_key()
    monkeypatch.setattr(ct, "key_id", lambda key: b"\0\0\0\0")
    token, _ = _issue(a)
    with pytest.raises(ct.TokenInvalid, match="authentication"):
        ct.open_token(token, [b], now=NOW)


@pytest.mark.parametrize(
    "field,value",
    [
        ("instance_id", "vm 1"),
        ("instance_id", ""),
        ("host", "10.0.0.5; rm -rf /"),
        ("host", ""),
        ("port", 0),
        ("port", 70000),
        ("password", "x" * 65),
    ],
)
def test_issuing_checks_the_fields(field, value):
    with pytest.raises(ValueError):
        _issue(ct.new_key(), **{field: value})


def test_keys_travel_as_base64_of_32_bytes():
    key = ct.new_key()
    assert ct.decode_key(ct.encode_key(key)) == key
    with pytest.raises(ValueError):
        ct.decode_key(ct.encode_key(key[:16]))
    with pytest.raises(ValueError):
        ct.decode_key("not base64!")


def test_public_view_leaves_the_password_out():
    _, grant = _issue(ct.new_key())
    assert "password" not in grant.public()
    assert grant.public()["instance_id"] == "vm-1"
