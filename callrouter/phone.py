"""Caller-ID normalization (pure): whatever the PBX sends -> E.164 or None ("no caller ID")."""
from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

_MAX_RAW = 32
_NO_CALLER_ID = {"", "anonymous", "unknown", "<unknown>", "restricted", "private", "unavailable", "s"}
_ALLOWED = re.compile(r"^[+0-9 ()\-./]+$")


@lru_cache(maxsize=65536)
def normalize(raw: str | None, region: str = "RU") -> str | None:
    """E.164 for a dialable phone number, else None. Never raises."""
    if raw is None:
        return None
    s = raw.strip()
    if s.lower() in _NO_CALLER_ID or len(s) > _MAX_RAW or not _ALLOWED.match(s):
        return None
    digits = re.sub(r"\D", "", s)
    if len(digits) < 5:
        return None  # an internal extension, not a phone number
    if s.startswith("00"):
        s = "+" + digits[2:]
    try:
        num = phonenumbers.parse(s, region)
        if not phonenumbers.is_valid_number(num):
            # '79161234567' in region RU: a national-format trunk often drops the '+'
            num = phonenumbers.parse("+" + digits, None)
            if not phonenumbers.is_valid_number(num):
                return None
    except phonenumbers.NumberParseException:
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
