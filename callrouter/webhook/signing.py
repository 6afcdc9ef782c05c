"""Webhook signatures (pure): HMAC-SHA256 over "<timestamp>.<body>", as Stripe-style
receivers check them. The timestamp is signed too, so a captured request cannot be
replayed later with a new timestamp; receivers reject timestamps older than a few minutes.

    X-Callrouter-Timestamp: 1795370423
    X-Callrouter-Signature: sha256=<hex>
"""
from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Callrouter-Signature"
TIMESTAMP_HEADER = "X-Callrouter-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for `body` sent at `timestamp` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300.0) -> bool:
    """The receiver's check: the signature matches and the timestamp is within
    `tolerance` seconds of `now`."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)
