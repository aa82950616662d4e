"""Secrets sealed at rest open only with the key and for the owner they were sealed for."""

from __future__ import annotations

import pytest

from policy.secretbox import SealedBoxError, SecretBox, SecretKeyError, new_key


def test_a_box_opens_with_its_key_for_its_owner_only():
    key = new_key()
    box = SecretBox(key).seal({"webhook_secret": "s3cret", "api": "k"}, "acme/int_1")
    assert b"s3cret" not in box
    assert SecretBox(key).open(box, "acme/int_1") == {"webhook_secret": "s3cret", "api": "k"}
    with pytest.raises(SealedBoxError):
        SecretBox(key).open(box, "globex/int_1")  # copied onto another tenant's row
    with pytest.raises(SealedBoxError):
        SecretBox(new_key()).open(box, "acme/int_1")  # another key
    tampered = box[:-1] + bytes([box[-1] ^ 1])
    with pytest.raises(SealedBoxError):
        SecretBox(key).open(tampered, "acme/int_1")


def test_two_seals_of_the_same_secrets_differ():
    box = SecretBox(new_key())
    assert box.seal({"a": "b"}, "o") != box.seal({"a": "b"}, "o")  # a fresh nonce each time


@pytest.mark.parametrize("key", ["", "not base64!", "c2hvcnQ="])
def test_a_key_that_is_not_32_bytes_of_base64_is_refused(key):
    with pytest.raises(SecretKeyError):
        SecretBox(key)
