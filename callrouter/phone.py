"""Caller-ID normalization (pure): whatever the PBX sends -> E.164 or None ("no caller ID").

`normalize(raw, region)` is the one way the daemon turns a caller ID (AGI `agi_callerid`,
AMI `CallerIDNum`, a CRM import) into the key it stores and looks up. None means "no
caller ID": it never matches a client and is never an error.

    +7 (916) 123-45-67 / 89161234567 / 79161234567 / 0079161234567 -> +79161234567  (RU)
    anonymous, unknown, "", letters, extensions (101), absurd lengths  -> None

Order of attempts, each accepted only when phonenumbers calls the result a *valid*
number: the raw string in the configured region (national formats, the region's own
international prefix such as RU 810 / US 011); then `00<cc>...` as international (the
ITU prefix most trunks use, which phonenumbers does not know for every region); then the
digits with a `+` in front (trunks that send `79161234567` without the plus).
"""
from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

# E.164 is at most 15 digits; formatting, an international prefix and spaces fit in 32.
MAX_RAW_LENGTH = 32
_NO_CALLER_ID = frozenset({"", "anonymous", "unknown", "<unknown>", "restricted", "private",
                           "unavailable", "withheld", "s"})
_ALLOWED = re.compile(r"[+0-9 ()\-./]+")
_NON_DIGITS = re.compile(r"\D")
_MIN_DIGITS = 5  # shorter is an internal extension (101), a service code, not a phone number


def normalize(raw: str | None, region: str = "RU") -> str | None:
    """E.164 (`+79161234567`) for a dialable phone number, else None. Never raises."""
    if not isinstance(raw, str) or len(raw) > MAX_RAW_LENGTH + 8:
        return None  # checked before the cache: a 64 KB header must not be kept in it
    if not isinstance(region, str):
        return None
    return _normalize(raw.strip(), region.upper())


@lru_cache(maxsize=65536)
def _normalize(s: str, region: str) -> str | None:
    if len(s) > MAX_RAW_LENGTH or s.lower() in _NO_CALLER_ID or not _ALLOWED.fullmatch(s):
        return None
    if "+" in s[1:]:
        return None
    digits = _NON_DIGITS.sub("", s)
    if len(digits) < _MIN_DIGITS:
        return None
    candidates = [s]
    if not s.startswith("+"):
        if digits.startswith("00"):
            candidates.append("+" + digits[2:])
        candidates.append("+" + digits)
    for c in candidates:
        try:
            num = phonenumbers.parse(c, region if not c.startswith("+") else None)
        except phonenumbers.NumberParseException:
            continue
        except Exception:  # noqa: BLE001 - a library surprise must not kill a call
            return None
        if phonenumbers.is_valid_number(num):
            return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return None


def is_e164(value: str) -> bool:
    """True for a string already in the form `normalize` returns."""
    return bool(re.fullmatch(r"\+[1-9][0-9]{4,14}", value))
