from __future__ import annotations

import base64
import hashlib
import hmac
import time

import standardwebhooks

from hookline.signing import (
    Signer,
    generate_secret,
    hex_signature,
    standard_signature,
    standard_webhooks_key,
)

# The published Standard Webhooks test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_signature_matches_the_published_vector() -> None:
    key = standard_webhooks_key(VECTOR_SECRET)

    assert standard_signature(key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == VECTOR_SIGNATURE


def test_signer_headers_carry_both_schemes() -> None:
    headers = Signer(VECTOR_SECRET).headers(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)

    assert headers["webhook-signature"] == VECTOR_SIGNATURE
    assert headers["webhook-id"] == VECTOR_ID
    assert headers["webhook-timestamp"] == str(VECTOR_TIMESTAMP)
    expected = hmac.new(VECTOR_SECRET.encode(), VECTOR_BODY, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == f"sha256={expected}"


def test_hex_signature_uses_the_secret_text_as_key() -> None:
    body = b'{"a":1}'
    digest = hmac.new(b"s3cret-value", body, hashlib.sha256).hexdigest()

    assert hex_signature("s3cret-value", body) == f"sha256={digest}"


def test_secret_without_prefix_is_used_as_utf8_bytes() -> None:
    assert standard_webhooks_key("plain secret ✓") == "plain secret ✓".encode()


def test_prefixed_secret_that_is_not_base64_falls_back_to_its_text() -> None:
    assert standard_webhooks_key("whsec_not base64!") == b"whsec_not base64!"


def test_generated_secret_is_32_random_bytes_and_verifies_with_the_library() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert generate_secret() != secret

    body = b'{"id":"evt_1","event":"x","timestamp":"t","data":{}}'
    verifier = standardwebhooks.Webhook(secret)
    # The library checks the timestamp against its own clock, so sign "now".
    headers = Signer(secret).headers("evt_1", int(time.time()), body)
    assert verifier.verify(body, headers) == {
        "id": "evt_1",
        "event": "x",
        "timestamp": "t",
        "data": {},
    }
