"""Text from the PBX made storable where it enters: callrouter.text, and the two edges
that call it (AMI event parsing, the FastAGI header block)."""
from __future__ import annotations

from callrouter.agi.protocol import parse_block
from callrouter.ami.events import parse_event
from callrouter.text import NUL_SIGN, REPLACEMENT, is_storable, storable


def test_nul_and_lone_surrogates_are_replaced_visibly_and_the_rest_kept():
    assert storable("Ivan\x00Petrov") == f"Ivan{NUL_SIGN}Petrov"
    assert storable("Iv\udc80an \U0001F600") == f"Iv{REPLACEMENT}an \U0001F600"  # a real emoji is kept
    assert storable("tab\there\x07") == "tab\there\x07"                          # storable: kept as sent
    clean = "Иван Петров"
    assert storable(clean) is clean
    assert storable("x" * 100, limit=10) == "x" * 10
    assert not is_storable("a\x00") and not is_storable("\ud800") and is_storable(storable("a\x00\ud800"))


def test_an_ami_caller_name_with_a_nul_reaches_the_tracker_storable():
    event = parse_event({"Event": "Newchannel", "Channel": "PJSIP/trunk-00000001", "Uniqueid": "1.1",
                         "Linkedid": "1.1", "CallerIDNum": "89161234567", "CallerIDName": "Ivan\x00Petrov",
                         "ChannelStateDesc": "Ring"})
    assert event.channel.caller_name == f"Ivan{NUL_SIGN}Petrov"
    assert event.channel.caller_num == "89161234567"


def test_a_fastagi_caller_id_with_a_nul_or_bad_utf8_is_storable():
    block = (b"agi_network_script: route\nagi_callerid: 8916\x001234567\nagi_calleridname: \xff\xfeIvan\n"
             b"agi_uniqueid: 1.1")
    request = parse_block(block)
    assert request.callerid == f"8916{NUL_SIGN}1234567"
    assert request.get("agi_calleridname") == f"{REPLACEMENT}{REPLACEMENT}Ivan"
