"""Signatures on delivered bodies, so receivers can tell the request came from us.

Two schemes are sent side by side. ``X-Webhook-Signature`` is the hex HMAC-SHA256 of the raw body
keyed with the secret's UTF-8 bytes, which the usual ``hmac.compare_digest`` recipe checks. The
Standard Webhooks headers (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``) sign
``{id}.{timestamp}.{body}``; for a ``whsec_`` secret the key is the base64 part decoded, as the
``standardwebhooks`` and ``svix`` libraries expect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
SECRET_RANDOM_BYTES = 32


def generate_secret() -> str:
    """Return a new endpoint secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_RANDOM_BYTES)).decode()


def standard_webhooks_key(secret: str) -> bytes:
    """Return the HMAC key the Standard Webhooks scheme uses for ``secret``."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            # A secret that only looks like ours is still a valid secret; use it as text.
            pass
    return secret.encode()


def hex_signature(secret: str, body: bytes) -> str:
    """Return the ``X-Webhook-Signature`` value: ``sha256=`` and the hex HMAC of ``body``."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def standard_signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value, ``v1,`` and the base64 HMAC of the signed content."""
    signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Signer:
    """Signs bodies for one endpoint; the Standard Webhooks key is decoded once, not per attempt."""

    __slots__ = ("_key", "_secret")

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._key = standard_webhooks_key(secret)

    def headers(self, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """Return the three signature-bearing headers for one attempt."""
        return {
            "X-Webhook-Signature": hex_signature(self._secret, body),
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_signature(self._key, message_id, timestamp, body),
        }
