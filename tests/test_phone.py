"""Caller-ID normalization: every form a PBX or a CRM sends."""
import phonenumbers
import pytest

from callrouter.phone import is_e164, normalize

SAME_CLIENT = ["+7 (916) 123-45-67", "89161234567", "79161234567", "0079161234567",
               "+79161234567", "8 916 123 45 67", "9161234567", "810 7 916 123-45-67",
               " +7-916-123-45-67 ", "7.916.123.45.67"]


@pytest.mark.parametrize("raw", SAME_CLIENT)
def test_forms_of_one_number_are_the_same_e164(raw):
    assert normalize(raw) == "+79161234567"
    assert normalize(raw, "RU") == "+79161234567"


NO_CALLER_ID = ["anonymous", "Anonymous", "unknown", "UNKNOWN", "<unknown>", "restricted",
                "private", "", "   ", "abc", "ivan", "sip:79161234567@pbx", "+7916123456x",
                "79161234567;ext=1", "1" * 40, "9" * 33, "+" + "7" * 500, "0" * 10_000,
                "101", "1234", "+0", "++79161234567", "7916+1234567", "\x00", "7916\n1234567",
                "٩١٦١٢٣٤٥٦٧", "+999 123 456 789", "00", "(((", "---", "s"]


@pytest.mark.parametrize("raw", NO_CALLER_ID)
def test_no_caller_id_never_crashes_never_matches(raw):
    assert normalize(raw) is None


@pytest.mark.parametrize("raw", [None, 79161234567, b"79161234567", ["79161234567"]])
def test_non_strings_are_no_caller_id(raw):
    assert normalize(raw) is None


def test_region_is_configurable():
    assert normalize("(650) 253-0000", "US") == "+16502530000"
    assert normalize("011 7 916 123 45 67", "US") == "+79161234567"   # the US intl prefix
    assert normalize("0016502530000", "RU") == "+16502530000"
    assert normalize("030 1234567", "DE") == "+49301234567"
    assert normalize("8 (495) 111-22-33", "ru") == "+74951112233"
    # a national number only makes sense in its region
    assert normalize("(650) 253-0000", "RU") is None


def test_bad_region_is_no_caller_id_not_a_crash():
    assert normalize("9161234567", "ZZ") is None
    assert normalize("+79161234567", "ZZ") == "+79161234567"
    assert normalize("9161234567", None) is None


def test_recorded_caller_ids():
    # agi_callerid values in tests/fixtures/asterisk/*.agi.jsonl
    assert normalize("79161234567") == "+79161234567"
    assert normalize("74951112233") == "+74951112233"
    assert normalize("79035550011") == "+79035550011"
    assert normalize("79160000039") == "+79160000039"


def test_is_e164():
    assert is_e164("+79161234567")
    assert not is_e164("79161234567")
    assert not is_e164("+0123")


def test_the_shortcut_agrees_with_the_full_parse_on_many_numbers():
    """The shortcut for plain-digit caller IDs must give exactly what the full
    phonenumbers path gives, or nothing: thousands of generated numbers in regions
    with simple and with complicated national prefixes."""
    import random

    from callrouter.phone import _full, _shortcut

    rnd = random.Random(7)
    prefixes = ["8", "7", "0", "1", "00", "810", "011", "+7", "+1", "+44", "+49", "+380", "+375", "+33", "+39",
                "+86", "+91", "+800", "+7 8", "+70", "+4900", "+1 1", "+54 9", "+5511", "9", "89", "80", "3", "4",
                "+0", "+00", "+01", "+007"]
    shortcuts = 0
    for region in ["RU", "US", "GB", "DE", "KZ", "UA", "BY", "FR", "IT", "AR", "BR", "CN", "IN", "MX"]:
        for _ in range(1500):
            prefix = rnd.choice(prefixes).replace(" ", "")
            s = prefix + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(3, 12)))
            quick = _shortcut(s, region)
            full = _full(s, s.lstrip("+"), region)
            if quick is not None:
                shortcuts += 1
                assert quick == full, (s, region, quick, full)
        # real numbers of every type, with random subscriber digits, in the forms trunks send
        for kind in range(11):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
            for _ in range(40):
                tail = "".join(rnd.choice("0123456789") for _ in range(3))
                number = e164[:-3] + tail
                national = "".join(ch for ch in phonenumbers.format_number(
                    phonenumbers.parse(number), phonenumbers.PhoneNumberFormat.NATIONAL) if ch.isdigit())
                for s in (number, national, number[1:]):
                    quick = _shortcut(s, region)
                    if quick is not None:
                        shortcuts += 1
                        assert quick == _full(s, s.lstrip("+"), region), (s, region)
    assert shortcuts > 3000  # the shortcut is actually taken for the common shapes
    assert _shortcut("89161234567", "RU") == "+79161234567"
    assert _shortcut("+79161234567", "RU") == "+79161234567"
    assert _shortcut("79161234567", "RU") is None  # a country code to strip: the full path decides
    assert normalize("+079161234567") is None and normalize("+012025550123") is None  # no country code 0x
