"""`phonenumbers.is_valid_number` for a country code and national number, compiled (pure).

`is_valid_number(cc, national)` gives the same answer as
`phonenumbers.is_valid_number(PhoneNumber(country_code=cc, national_number=int(national)))`
for a national number without a leading zero, in ~1 µs instead of ~14: phonenumbers
looks each number type's pattern up and compiles (or fetches) it on every call, ten
times per number; here a country code's patterns are read from the same metadata once
and folded, per number length, into one pattern per region. `callrouter.phone` runs
this for every caller ID and every phone of a CRM import; tests/test_phonevalid.py
compares the two on numbers of every country code.

What phonenumbers does, and this mirrors step by step:
- the region: the only one of the country code, or the first of its regions whose
  `leading_digits` match the start of the number or (a region without them) whose
  number types the number matches; none -> invalid;
- valid in that region: the number matches the general description and at least one
  number type (premium rate, toll free, shared cost, VoIP, personal, pager, UAN,
  voicemail, fixed line; mobile unless the metadata says its pattern is the fixed
  line's), each description counting only when the number's length is one of its
  possible lengths (a description listing none takes any length) and its pattern is
  not empty.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata, PhoneNumber

# the number types phonenumbers' _number_type_helper tries, mobile last
_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
          "voicemail", "fixed_line")
_NEVER = re.compile(r"(?!)")  # a pattern nothing matches


@dataclass(frozen=True, slots=True)
class _Region:
    leading: re.Pattern[str] | None     # the region's leading_digits, if it has them
    general: dict[int, re.Pattern[str]]  # by length: the general description's pattern
    types: dict[int, re.Pattern[str]]    # by length: every number type's pattern, or-ed

    def valid(self, national: str) -> bool:
        n = len(national)
        general = self.general.get(n)
        if general is None:  # an empty number
            return False
        return general.fullmatch(national) is not None and self.types[n].fullmatch(national) is not None


def _descs(md: PhoneMetadata) -> list[object]:
    descs = [getattr(md, t) for t in _TYPES]
    if not md.same_mobile_and_fixed_line_pattern:
        descs.append(md.mobile)
    return descs


def _by_length(descs: list[object], lengths: range) -> dict[int, re.Pattern[str]]:
    """For each length: one pattern matching what any of `descs` accepts at that length."""
    out: dict[int, re.Pattern[str]] = {}
    for n in lengths:
        patterns = []
        for d in descs:
            if d is None or not d.national_number_pattern:
                continue
            possible = d.possible_length
            if len(possible) > 0 and n not in possible:
                continue
            patterns.append(f"(?:{d.national_number_pattern})")
        out[n] = re.compile("|".join(patterns)) if patterns else _NEVER
    return out


# national significant numbers are at most 17 digits (ITU E.164 and phonenumbers' limit)
_LENGTHS = range(1, 18)


def _region(md: PhoneMetadata) -> _Region:
    return _Region(leading=re.compile(md.leading_digits) if md.leading_digits is not None else None,
                   general=_by_length([md.general_desc], _LENGTHS), types=_by_length(_descs(md), _LENGTHS))


@lru_cache(maxsize=None)  # one entry per country code (about 250 exist)
def _regions(cc: int) -> tuple[_Region | None, tuple[_Region, ...]]:
    """(the region when the country code has only one, the regions to pick from otherwise)"""
    codes = COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if codes is None:
        return None, ()
    if len(codes) == 1:
        md = PhoneMetadata.metadata_for_region_or_calling_code(cc, codes[0].upper())
        return (_region(md) if md is not None else None), ()
    regions = []
    for code in codes:
        md = PhoneMetadata.metadata_for_region(code.upper(), None)
        if md is not None:
            regions.append(_region(md))
    return None, tuple(regions)


def is_valid_number(cc: int, national: str) -> bool:
    """True when phonenumbers calls +`cc` `national` a valid number. `national`: ASCII
    digits, not starting with 0 (phonenumbers keeps a national number as an int)."""
    if len(national) > _LENGTHS[-1]:  # beyond any pattern's reach: ask phonenumbers itself
        return phonenumbers.is_valid_number(PhoneNumber(country_code=cc, national_number=int(national)))
    only, regions = _regions(cc)
    if only is not None:
        return only.valid(national)
    for r in regions:
        if r.leading is not None:
            if r.leading.match(national):
                return r.valid(national)
        elif r.valid(national):
            return True
    return False
