"""The Asterisk side of FastAGI, for tests, benchmarks and smoke checks against a running
router: connect, send an `agi_*` header block, answer every command with
`200 result=1` (as Asterisk does for SET VARIABLE), collect the variables set - read
the way Asterisk reads them: the command line split as res_agi's parse_args does, and
`SET VARIABLE ARRAY(A,B) "a,b"` split as the ARRAY() function does (app.c's
__ast_app_separate_args)."""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field



def header_block(env: Mapping[str, str]) -> bytes:
    """agi_* variables -> the block Asterisk sends (lines and a blank line)."""
    return "".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


def route_request(callerid: str, *, linkedid: str | None = None, uniqueid: str | None = None,
                  script: str = "route", extra: Mapping[str, str] | None = None) -> bytes:
    """A header block like Asterisk 22 sends for AGI(agi://host:4573/route,${CHANNEL(linkedid)}).
    The inbound channel runs the AGI, so its uniqueid is the call's linkedid unless given."""
    uniqueid = uniqueid or linkedid or "1795370423.505"
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


def agi_args(line: str) -> list[str]:
    """A command line split into arguments as res_agi's parse_args does: whitespace
    separates, double quotes group, a backslash makes the next character literal."""
    args: list[str] = []
    cur: list[str] | None = None
    quoted = escaped = False
    for ch in line.rstrip("\r\n"):
        if ch == '"' and not escaped:
            quoted = not quoted
            if cur is None:
                cur = []
        elif ch in " \t" and not quoted and not escaped:
            if cur is not None:
                args.append("".join(cur))
                cur = None
        elif ch == "\\" and not escaped:
            escaped = True
        else:
            if cur is None:
                cur = []
            cur.append(ch)
            escaped = False
    if cur is not None:
        args.append("".join(cur))
    return args


def separate_args(text: str, delim: str = ",") -> list[str]:
    """Asterisk's splitter for application and function arguments, quote and escape
    removal on (AST_STANDARD_APP_ARGS): no split inside (), [] or quotes; quotes are
    dropped; a backslash makes the next character literal. (Close to app.c, not exact
    for raw quotes in odd places, which the router never sends: it escapes them.)"""
    out: list[str] = []
    cur: list[str] = []
    paren = bracket = 0
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "[":  # nesting is counted inside quotes too, as app.c does
            bracket += 1
        elif ch == "]" and bracket:
            bracket -= 1
        elif ch == "(":
            paren += 1
        elif ch == ")" and paren:
            paren -= 1
        elif ch == '"':
            quoted = not quoted
            i += 1
            continue
        elif ch == "\\":
            i += 1
            if i < len(text):
                cur.append(text[i])
            i += 1
            continue
        elif ch == delim and not paren and not bracket and not quoted:
            out.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    if cur or out or text:
        out.append("".join(cur))
    return out


def parse_set_variable(line: str) -> list[tuple[str, str]] | None:
    """The variables a `SET VARIABLE` command line sets, or None for another command."""
    args = agi_args(line)
    if len(args) != 4 or [a.upper() for a in args[:2]] != ["SET", "VARIABLE"]:
        return None
    name, value = args[2], args[3]
    if name.upper().startswith("ARRAY(") and name.endswith(")"):
        names = separate_args(name[6:-1])
        values = separate_args(value)
        return [(n, values[k] if k < len(values) else "") for k, n in enumerate(names)]
    return [(name, value)]


async def agi_call(host: str, port: int, request: bytes, *, reply: bytes = b"200 result=1\n",
                   timeout: float = 5.0, array_function: bool = True, local: str | None = None) -> ProbeResult:
    """Send `request`, answer each command line with `reply` until the server closes;
    `GET VARIABLE` is answered as Asterisk does, from the variables set so far.
    `array_function=False` plays a PBX without func_strings: `SET VARIABLE ARRAY(...)`
    is answered 200 and sets nothing (as Asterisk does). `local`: the address to connect
    from (127.0.0.2 plays a second PBX on loopback)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=(local, 0) if local else None), timeout)
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
                args = agi_args(text)
                if len(args) == 3 and [a.upper() for a in args[:2]] == ["GET", "VARIABLE"]:
                    value = out.variables.get(args[2])
                    writer.write(b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode())
                    continue
                if array_function or not args[2:3] or not args[2].upper().startswith("ARRAY("):
                    for name, value in parse_set_variable(text) or ():
                        out.variables[name] = value
                writer.write(reply)
    finally:
        writer.close()
    return out
