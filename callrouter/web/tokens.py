"""API tokens: made once, shown once, stored as a salted scrypt hash.

A token reads `cr_<token_id>_<secret>`. `token_id` is public and finds the user's row;
only `scrypt(secret)` is stored, so a copy of the database gives no usable token.
The secret is 256 random bits, so scrypt's cost parameters guard a leaked hash, not
a guessable password; they are kept moderate (16 MiB, a few tens of ms) and the
check runs in a thread, with verified tokens remembered (see auth.py) so a busy
client does not pay it per request.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

PREFIX = "cr_"
_N, _R, _P = 2**14, 8, 1
_DKLEN = 32


@dataclass(frozen=True, slots=True)
class NewToken:
    token: str        # shown to the user once
    token_id: str     # stored in clear, finds the row
    token_hash: str   # stored


def _b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _unb64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    dk = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(dk)}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, dk = stored.split("$")
        if kind != "scrypt":
            return False
        want = _unb64(dk)
        got = hashlib.scrypt(secret.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def new_token() -> NewToken:
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewToken(f"{PREFIX}{token_id}_{secret}", token_id, hash_secret(secret))


def split_token(token: str) -> tuple[str, str] | None:
    """(token_id, secret) of a well-formed token, else None."""
    if not token.startswith(PREFIX):
        return None
    token_id, sep, secret = token[len(PREFIX):].partition("_")
    if not sep or not token_id or not secret or len(token) > 200:
        return None
    return token_id, secret
