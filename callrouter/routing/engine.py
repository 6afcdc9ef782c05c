"""The routing decision (pure): caller, client(s), presence, time, rules -> RouteDecision.

No IO and no clock: everything comes in as arguments, so the same function runs in the
FastAGI server, in `callrouter route`, in tests and in benchmarks. Rules are tried in
order and the first that matches wins; every rule tried leaves a line in the trace
saying what was checked and why it did or did not match.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from callrouter.routing.decision import RouteDecision
from callrouter.routing.rules import CompiledRule, Rules, Tier
from callrouter.routing.types import AgentStatus, ClientInfo

_EXTENSION = re.compile(r"[0-9A-Za-z*#+_-]{1,32}")
# Characters a phone display or the dialplan must never see in CLIENT_NAME / CLIENT_ID:
# AGI quoting, dialplan expressions and argument separators.
_UNSAFE = set('"\\$`{}[];,|<>^')
_UNSAFE_RE = re.compile(r'["\\$`{}\[\];,|<>^]')

FALLBACK_ARROW = "\u2192"  # owner-unavailable→tier:retail


def sanitize_display(text: str | None, limit: int = 32) -> str:
    """A name safe for a phone's display and for the dialplan: NFC, no control/format
    characters (newlines, bidi overrides), no quotes/`$`/braces/separators, single spaces,
    at most `limit` characters."""
    if not text:
        return ""
    text = str(text)[: limit * 8]
    if text.isprintable() and not _UNSAFE_RE.search(text) and unicodedata.is_normalized("NFC", text):
        return " ".join(text.split())[:limit].rstrip()  # the common case, without a per-character loop
    text = unicodedata.normalize("NFC", text)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat.startswith("Z") or ch in "\t\r\n":
            out.append(" ")
        elif cat[0] == "C" or ch in _UNSAFE:
            continue
        else:
            out.append(ch)
    return " ".join("".join(out).split())[:limit].rstrip()


class PresenceView(Protocol):
    def get(self, extension: str) -> AgentStatus | None: ...


def default_decision(dial: str, timeout: int, reason: str, *, caller: str | None = None,
                     trace: Sequence[str] = ()) -> RouteDecision:
    """The configured default route (no rule matched, the deadline passed, an error)."""
    return RouteDecision(rule="", reason=reason, dial=dial, timeout=timeout, caller=caller,
                         trace=tuple(trace))


def owner_dial(extension: str, rules: Rules, devices: Mapping[str, Sequence[str]] | None = None) -> str:
    """The owner's configured devices rung together, else the rules' owner_dial template."""
    devs = (devices or {}).get(extension) or ()
    if devs:
        return "&".join(devs)
    return rules.owner_dial.format(extension=extension)


def tier_of(client: ClientInfo, rules: Rules) -> tuple[Tier, str]:
    """The client's tier and why: the CRM's tier when it names a known tier, otherwise by
    monthly turnover (the highest threshold not above it)."""
    if client.tier:
        t = rules.tier(client.tier)
        if t is not None:
            return t, f"tier {t.name} set on the client"
    turnover = client.monthly_turnover
    chosen = rules.tiers[0]
    if turnover is None:
        why = f"no turnover known: lowest tier {chosen.name}"
    else:
        for t in rules.tiers:
            if turnover >= t.min_turnover:
                chosen = t
        why = f"turnover {turnover:,.0f} ≥ {chosen.min_turnover:,.0f}: tier {chosen.name}"
    if client.tier:
        why = f"client tier {client.tier!r} is not defined in the rules; {why}"
    return chosen, why


def decide(caller: str | None, clients: ClientInfo | Sequence[ClientInfo] | None,
           presence: PresenceView | Mapping[str, AgentStatus] | None, now: datetime, rules: Rules, *,
           devices: Mapping[str, Sequence[str]] | None = None, raw_caller: str | None = None,
           default_dial: str = "Local/support@queues", default_timeout: int = 20,
           rules_version: int | None = None, lookup: str | None = None) -> RouteDecision:
    """Route one call. `caller`: E.164 or None; `clients`: those the phone belongs to (None /
    empty: unknown caller; several: ambiguous); `presence`: extension -> AgentStatus
    (missing = unknown = available); `now`: the time of the call (aware; naive = the
    rules' zone); `devices`: extension -> devices of configured managers; `rules_version`
    and `lookup` (the lookup's source) are carried into the decision as they are."""
    if clients is None:
        found: tuple[ClientInfo, ...] = ()
    elif isinstance(clients, ClientInfo):
        found = (clients,)
    else:
        found = tuple(clients)
    client = found[0] if len(found) == 1 else None
    limit = rules.display_name_max
    trace: list[str] = []

    if caller is None:
        trace.append(f"caller: no caller ID (raw {raw_caller!r})" if raw_caller is not None
                     else "caller: no caller ID")
    elif not found:
        trace.append(f"caller {caller}: no client has this number")
    elif client is not None:
        trace.append(f"caller {caller}: client {client.id} {client.name!r}, owner "
                     f"{client.owner_extension or '-'}, turnover {_money(client.monthly_turnover)}, "
                     f"tier {client.tier or '-'}{', PROBLEM' if client.problem else ''}"
                     f"{', BLOCKED' if client.blocked else ''}")
    else:
        trace.append(f"caller {caller}: AMBIGUOUS, the number is on {len(found)} clients: "
                     + ", ".join(c.id for c in found))

    lead = caller is not None and not found
    base = dict(caller=caller, lead=lead,
                candidates=tuple(c.id for c in found) if len(found) > 1 else (),
                owner=client.owner_extension if client else None,
                client_id=client.id if client else None,
                client_name=sanitize_display(client.name, limit) if client else "",
                rules_version=rules_version, lookup=lookup)
    if len(found) > 1:
        base["client_name"] = sanitize_display(f"{len(found)} clients", limit)

    hours_cache: list[tuple[bool, str]] = []

    def is_open() -> tuple[bool, str]:
        if not hours_cache:
            hours_cache.append(rules.is_open(now))
        return hours_cache[0]

    skipped_owner: str | None = None  # why an owner rule was passed over (for the reason)
    for c in rules.rules:
        r = c.rule
        ok, why = _conditions(c, caller, found, client, is_open, rules)
        if not ok:
            trace.append(f"rule {r.name}: no: {why}")
            continue
        if r.to == "owner":
            ext = client.owner_extension if client else None
            if client is None or not ext:
                trace.append(f"rule {r.name}: no: {why}; "
                             + ("no single client" if client is None else "the client has no owner"))
                continue
            if not _EXTENSION.fullmatch(ext):
                trace.append(f"rule {r.name}: no: owner extension {ext!r} is not dialable")
                continue
            status = _status(presence, ext)
            if not status.available:
                skipped_owner = skipped_owner or f"owner {ext} {status.describe()}"
                trace.append(f"rule {r.name}: skipped: owner {ext} is {status.describe()}")
                continue
            fallback, fb_why = _fallback(r.fallback, client, rules)
            trace.append(f"rule {r.name}: MATCH: {why}; owner {ext} is {status.describe()}"
                         + (f"; fallback {fb_why}" if fb_why else ""))
            return RouteDecision(rule=r.name, reason=r.reason or "owner", dial=owner_dial(ext, rules, devices),
                                 timeout=r.timeout or rules.default_timeout, fallback=fallback,
                                 trace=tuple(trace), **base)
        if r.to == "tier":
            if client is None:
                trace.append(f"rule {r.name}: no: {why}; "
                             + ("no client" if not found else "ambiguous: not resolved by guessing"))
                continue
            tier, t_why = tier_of(client, rules)
            reason = r.reason or f"tier:{tier.name}"
            if skipped_owner:
                reason = f"owner-unavailable{FALLBACK_ARROW}{reason}"
            fallback, fb_why = _fallback(r.fallback, client, rules)
            trace.append(f"rule {r.name}: MATCH: {why}; {t_why}" + (f"; fallback {fb_why}" if fb_why else ""))
            return RouteDecision(rule=r.name, reason=reason, dial=tier.dial,
                                 timeout=r.timeout or tier.timeout or rules.default_timeout,
                                 fallback=fallback, trace=tuple(trace), **base)
        # a fixed destination
        reason = r.reason or r.name
        if skipped_owner:
            reason = f"owner-unavailable{FALLBACK_ARROW}{reason}"
        fallback, fb_why = _fallback(r.fallback, client, rules)
        trace.append(f"rule {r.name}: MATCH: {why}" + (f"; fallback {fb_why}" if fb_why else ""))
        return RouteDecision(rule=r.name, reason=reason, dial=r.dial or "",
                             timeout=r.timeout or rules.default_timeout, fallback=fallback,
                             trace=tuple(trace), **base)

    trace.append(f"no rule matched: default route {default_dial}")
    return RouteDecision(rule="", reason="no-rule", dial=default_dial, timeout=default_timeout,
                         trace=tuple(trace), **base)


def _money(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def _status(presence: Any, ext: str) -> AgentStatus:
    st = presence.get(ext) if presence is not None else None
    return st if st is not None else AgentStatus(ext, "unknown", detail="no presence seen")


def _fallback(spec: str | None, client: ClientInfo | None, rules: Rules) -> tuple[str, str]:
    if spec is None:
        return "", ""
    if spec != "tier":
        return spec, spec
    if client is None:
        return "", "tier: none (no single client)"
    tier, why = tier_of(client, rules)
    return tier.dial, f"{tier.dial} ({why})"


def _conditions(c: CompiledRule, caller: str | None, found: tuple[ClientInfo, ...],
                client: ClientInfo | None, is_open: Any, rules: Rules) -> tuple[bool, str]:
    """(all conditions hold, what was checked). Client flags need exactly one client:
    an ambiguous caller never matches blocked/problem/tier conditions by guessing."""
    w = c.rule.when
    checked: list[str] = []
    if c.caller_in is not None:
        if caller is None or caller not in c.caller_in:
            return False, f"caller not in the list of {len(c.caller_in)} numbers"
        checked.append(f"caller {caller} is listed")
    if w.caller_id is not None:
        has = caller is not None
        if has != (w.caller_id == "present"):
            return False, f"caller ID is {'present' if has else 'absent'}"
        checked.append(f"caller ID {w.caller_id}")
    if w.client is not None:
        kind = "ambiguous" if len(found) > 1 else "known" if found else "unknown"
        if kind != w.client:
            return False, f"client is {kind}, not {w.client}"
        checked.append(f"client {kind}")
    for flag in ("blocked", "problem"):
        want = getattr(w, flag)
        if want is None:
            continue
        if client is None:
            return False, f"{flag}: no single client to check"
        if getattr(client, flag) != want:
            return False, f"client is {'' if getattr(client, flag) else 'not '}{flag}"
        checked.append(f"client {'' if want else 'not '}{flag}")
    if w.tier is not None:
        if client is None:
            return False, "tier: no single client to check"
        tname = tier_of(client, rules)[0].name  # the CRM's tier, else by turnover
        if tname not in w.tier:
            return False, f"client tier {tname} not in {list(w.tier)}"
        checked.append(f"tier {tname}")
    if w.hours is not None:
        open_, why = is_open()
        if open_ != (w.hours == "open"):
            return False, why
        checked.append(why)
    return True, "; ".join(checked) if checked else "always"
