"""CloudStack IKE/ESP policy strings -> strongSwan proposals, and what is refused."""

from __future__ import annotations

import pytest

from appliances.router.vpn_policy import PolicyError, to_strongswan


@pytest.mark.parametrize(
    ("policy", "kind", "expected"),
    [
        ("aes128-sha1;modp1536", "ike", ["aes128-sha1-modp1536"]),
        ("aes256-sha256;modp2048", "ike", ["aes256-sha256-modp2048"]),
        ("AES128-SHA256;MODP2048", "ike", ["aes128-sha256-modp2048"]),
        (
            "aes128-sha1;modp1536,aes256-sha512;ecp384",
            "ike",
            ["aes128-sha1-modp1536", "aes256-sha512-ecp384"],
        ),
        ("aes128gcm16-sha256;curve25519", "ike", ["aes128gcm16-prfsha256-curve25519"]),
        ("aes128-sha1", "esp", ["aes128-sha1"]),  # no group: no PFS
        ("aes128-sha1;modp1536", "esp", ["aes128-sha1-modp1536"]),  # PFS group
        ("aes256gcm16;modp2048", "esp", ["aes256gcm16-modp2048"]),
        ("aes128-sha1,aes128-sha1", "esp", ["aes128-sha1"]),  # duplicates once
    ],
)
def test_mapping(policy, kind, expected):
    assert to_strongswan(policy, kind=kind) == expected


@pytest.mark.parametrize(
    ("policy", "kind", "words"),
    [
        ("3des-md5", "esp", ["weak", "3des", "md5", "allow_weak"]),
        ("aes128-sha1;modp1024", "ike", ["weak", "modp1024"]),
        ("des-sha1", "esp", ["weak", "DES"]),
        ("aes128-sha256;modp768", "ike", ["weak", "modp768"]),
        ("aes128-sha256;modp2048,3des-sha1;modp2048", "ike", ["weak", "3des"]),
    ],
)
def test_weak_is_refused_unless_allowed(policy, kind, words):
    with pytest.raises(PolicyError) as err:
        to_strongswan(policy, kind=kind)
    for word in words:
        assert word in str(err.value)
    assert to_strongswan(policy, kind=kind, allow_weak=True)


def test_sha1_is_not_weak():
    # HMAC-SHA1 (integrity, PRF) is not affected by SHA-1 collisions; CloudStack's default.
    assert to_strongswan("aes128-sha1;modp1536", kind="ike") == ["aes128-sha1-modp1536"]


@pytest.mark.parametrize(
    ("policy", "kind", "words"),
    [
        ("aes128-sha256", "ike", ["no DH group"]),
        ("blowfish-sha1", "esp", ["unknown cipher"]),
        ("aes128-whirlpool", "esp", ["unknown hash"]),
        ("aes128-sha1;modp999", "esp", ["unknown DH group"]),
        ("aes128", "esp", ["needs a hash"]),
        ("aes128gcm16-sha256", "esp", ["AEAD"]),
        ("aes128gcm16;modp2048", "ike", ["PRF"]),
        ("aes128-sha1;modp2048;x", "esp", ["is not"]),
        (",".join(["aes128-sha1"] * 17), "esp", ["1 to 16"]),
    ],
)
def test_unusable_policies(policy, kind, words):
    with pytest.raises(PolicyError) as err:
        to_strongswan(policy, kind=kind, allow_weak=True)
    for word in words:
        assert word in str(err.value)
