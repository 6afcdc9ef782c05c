"""The Asterisk side of FastAGI, for tests, benchmarks and smoke checks against a running
router: connect, send an `agi_*` header block, answer every command with
`200 result=1` (as Asterisk does for SET VARIABLE), collect the variables set."""
from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

_SET = re.compile(r'^SET VARIABLE (\S+) "((?:[^"\\]|\\.)*)"\s*$')


def header_block(env: Mapping[str, str]) -> bytes:
    """agi_* variables -> the block Asterisk sends (lines and a blank line)."""
    return "".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


def route_request(callerid: str, *, linkedid: str | None = None, uniqueid: str = "1795370423.505",
                  script: str = "route", extra: Mapping[str, str] | None = None) -> bytes:
    """A header block like Asterisk 22 sends for AGI(agi://host:4573/route,${CHANNEL(linkedid)})."""
    env = {
        "agi_network": "yes", "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}", "agi_channel": "PJSIP/trunk-00000001",
        "agi_language": "en", "agi_type": "PJSIP", "agi_uniqueid": uniqueid, "agi_version": "22.10.1",
        "agi_callerid": callerid, "agi_calleridname": callerid, "agi_callingpres": "0",
        "agi_callingani2": "0", "agi_callington": "0", "agi_callingtns": "0", "agi_dnid": "5550100",
        "agi_rdnis": "unknown", "agi_context": "from-pstn", "agi_extension": "5550100", "agi_priority": "2",
        "agi_enhanced": "0.0", "agi_accountcode": "", "agi_threadid": "140426153985728",
    }
    if linkedid is not None:
        env["agi_arg_1"] = linkedid
    env.update(extra or {})
    return header_block(env)


@dataclass
class ProbeResult:
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    closed_by_server: bool = False

    def ordered(self) -> list[tuple[str, str]]:
        return list(self.variables.items())


def parse_set_variable(line: str) -> tuple[str, str] | None:
    m = _SET.match(line.rstrip("\n"))
    if not m:
        return None
    return m.group(1), re.sub(r"\\(.)", r"\1", m.group(2))


async def agi_call(host: str, port: int, request: bytes, *, reply: bytes = b"200 result=1\n",
                   timeout: float = 5.0) -> ProbeResult:
    """Send `request`, answer each command line with `reply` until the server closes."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    out = ProbeResult()
    try:
        async with asyncio.timeout(timeout):
            writer.write(request)
            while True:
                line = await reader.readline()
                if not line:
                    out.closed_by_server = True
                    break
                text = line.decode("utf-8", "replace")
                out.commands.append(text)
                kv = parse_set_variable(text)
                if kv is not None:
                    out.variables[kv[0]] = kv[1]
                writer.write(reply)
    finally:
        writer.close()
    return out
