"""Password hashing."""

from __future__ import annotations

from mgmt.db.passwords import check_password, hash_password


def test_hash_checks_the_right_password_only() -> None:
    hashed = hash_password("s3cret pässword")
    assert hashed.startswith("scrypt$")
    assert "s3cret" not in hashed
    assert check_password(hashed, "s3cret pässword")
    assert not check_password(hashed, "s3cret password")
    assert not check_password(hashed, "")


def test_salted_so_equal_passwords_hash_differently() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second
    assert check_password(first, "same") and check_password(second, "same")


def test_malformed_or_missing_hashes_never_match() -> None:
    for bad in (None, "", "plain", "md5$x$y", "scrypt$1$2$3$@@$@@", "scrypt$a$b$c$d$e"):
        assert not check_password(bad, "plain")
