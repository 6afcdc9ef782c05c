"""The compiled validity check (callrouter.phonevalid) answers as phonenumbers does, on
numbers of every country code: each region's example numbers of every type, and the
same numbers with a digit changed, added or dropped, and random digits of every length."""
import random

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumber, PhoneNumberType

from callrouter import phonevalid

TYPES = [v for k, v in vars(PhoneNumberType).items() if k.isupper() and isinstance(v, int)]


def numbers(rnd: random.Random) -> list[tuple[int, str]]:
    out: set[tuple[int, str]] = set()
    for cc, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        seeds = []
        for region in regions:
            for t in TYPES:
                ex = (phonenumbers.example_number_for_non_geo_entity(cc) if region == "001"
                      else phonenumbers.example_number_for_type(region, t))
                if ex is not None and ex.country_code == cc:
                    seeds.append(str(ex.national_number))
        for s in seeds:
            out.add((cc, s))
            for _ in range(6):
                i = rnd.randrange(len(s))
                out.add((cc, s[:i] + str(rnd.randrange(10)) + s[i + 1:]))   # a digit changed
                out.add((cc, s + str(rnd.randrange(10))))                    # one more
                out.add((cc, s[:-1]))                                        # one fewer
                out.add((cc, s[:i + 1] + "".join(rnd.choices("0123456789", k=len(s) - i - 1))))
        for n in range(1, 19):
            out.add((cc, str(rnd.randrange(1, 10)) + "".join(rnd.choices("0123456789", k=n - 1))))
    return sorted(x for x in out if x[1] and x[1][0] != "0")


def test_same_answer_as_phonenumbers_for_every_country_code() -> None:
    checked = numbers(random.Random(15))
    valid = 0
    wrong = []
    for cc, national in checked:
        expected = phonenumbers.is_valid_number(PhoneNumber(country_code=cc, national_number=int(national)))
        valid += expected
        if phonevalid.is_valid_number(cc, national) != expected:
            wrong.append((cc, national, expected))
    assert wrong == []
    # the sample holds plenty of both answers, across the whole numbering plan
    assert len(checked) > 20_000 and valid > 3_000 and len(checked) - valid > 10_000


def test_common_shapes() -> None:
    assert phonevalid.is_valid_number(7, "9161234567")            # RU mobile
    assert phonevalid.is_valid_number(7, "4951112233")            # RU Moscow
    assert phonevalid.is_valid_number(7, "7012345678")            # KZ, by leading digits
    assert not phonevalid.is_valid_number(7, "916123456")         # a digit short
    assert phonevalid.is_valid_number(1, "6502530000")            # US
    assert not phonevalid.is_valid_number(999, "123456789")       # no such country code
    assert not phonevalid.is_valid_number(7, "9" * 20)            # longer than any number
