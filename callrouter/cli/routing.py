"""`callrouter rules check [DIR]` and `callrouter route NUMBER [--at ISO-TIME]`."""
from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from callrouter.config import Settings
from callrouter.devices import DeviceMap
from callrouter.phone import DEFAULT_REGION
from callrouter.routing.rules import RulesError, load_rules, rule_files

from . import main
from .common import config_option, settings_of



@main.group("rules")
def rules() -> None:
    """Routing rules (rules/*.yaml)."""


@rules.command("check")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@config_option
@click.pass_context
def rules_check(ctx: click.Context, directory: str | None, config: str | None) -> None:
    """Validate every rules file in DIRECTORY (default: rules_dir of the config).
    Prints each problem as FILE: rule 'NAME': PROBLEM; exits 1 when there is any."""
    if directory is None:
        s = settings_of(ctx, config)
        directory, region = s.rules_dir, s.default_region
    else:
        try:
            region = settings_of(ctx, config).default_region
        except click.ClickException:
            if config:
                raise
            region = DEFAULT_REGION  # checking a directory needs no config; the default region will do
    try:
        loaded = load_rules(directory, region)
    except RulesError as e:
        for p in e.problems:
            click.echo(str(p), err=True)
        click.echo(f"{len(e.problems)} problem(s) in {directory}", err=True)
        sys.exit(1)
    names = [c.rule.name for c in loaded.rules]
    files = rule_files(directory)
    click.echo(f"OK: {len(names)} rules in {len(files)} file(s): {', '.join(names)}")
    if loaded.tiers:
        click.echo("tiers: " + ", ".join(f"{t.name} ≥ {t.min_turnover:,.0f} → {t.dial}" for t in loaded.tiers))
    click.echo(f"time zone {loaded.timezone.key}; business hours "
               f"{'set' if loaded.business_hours is not None else 'not set (always open)'}; "
               f"{len(loaded.holidays)} holidays")


@main.command("route")
@click.argument("number")
@click.option("--at", "at", default=None, metavar="ISO-TIME",
              help="time of the call (default now); without an offset it is the rules' time zone")
@click.option("--rules", "rules_dir", default=None, type=click.Path(file_okay=False),
              help="rules directory (default: rules_dir of the config)")
@click.option("--json", "as_json", is_flag=True, help="print the decision as JSON")
@config_option
@click.pass_context
def route(ctx: click.Context, number: str, at: str | None, rules_dir: str | None, as_json: bool,
          config: str | None) -> None:
    """Show where a call from NUMBER would go, and why, without a PBX (clients and DND
    from the configured store; the phones' live state is unknown here: available)."""
    s = settings_of(ctx, config)
    try:
        when = datetime.fromisoformat(at) if at else datetime.now(UTC)
    except ValueError:
        raise click.BadParameter(f"{at!r} is not an ISO time like 2026-11-23T10:00 or "
                                 "2026-11-23T10:00+03:00", param_hint="--at") from None
    try:
        loaded = load_rules(rules_dir or s.rules_dir, s.default_region)
    except RulesError as e:
        raise click.ClickException("the rules do not load:\n" + "\n".join(str(p) for p in e.problems)) from None
    try:
        result = asyncio.run(_route(s, loaded, number, when))
    except click.ClickException:
        raise
    except Exception as e:  # noqa: BLE001 - a CLI reports, it does not dump a traceback
        raise click.ClickException(f"{type(e).__name__}: {e}") from None
    decision = result["decision"]
    if as_json:
        click.echo(json.dumps(decision.to_dict() | {"at": result["at"]}, ensure_ascii=False, indent=2))
        return
    click.echo(f"caller:   {decision.caller or 'no caller ID'} (raw {number!r})")
    click.echo(f"at:       {result['at']}")
    click.echo(f"decision: rule {decision.rule or '-'}, reason {decision.reason}")
    for name, value in decision.variables():
        click.echo(f"  {name}={value}")
    if decision.lead:
        click.echo("  (a lead would be recorded for this caller)")
    if decision.ambiguous:
        click.echo(f"  AMBIGUOUS: the number is on clients {', '.join(decision.candidates)}")
    click.echo("why:")
    for line in decision.trace:
        click.echo(f"  {line}")


async def _route(s: Settings, loaded: Any, number: str, when: datetime) -> dict[str, Any]:
    from callrouter.phone import normalize
    from callrouter.routing.presence import Presence
    from callrouter.routing.engine import decide
    from callrouter.routing.lookup import StoreLookup
    from callrouter.store import SchemaNotCurrent, Store

    caller = normalize(number, s.default_region)
    try:
        async with Store(s.database_url) as store:
            found = await StoreLookup(store).lookup(caller)
            presence = Presence(DeviceMap(s.managers), dnd=await store.dnd_extensions())
    except SchemaNotCurrent as e:
        raise click.ClickException(str(e)) from None
    decision = decide(caller, found.clients, presence, when, loaded, raw_caller=number,
                      devices={m.extension: m.devices for m in s.managers if m.devices},
                      default_dial=s.agi.default_dial, default_timeout=s.agi.default_timeout)
    local = when.astimezone(loaded.timezone) if when.tzinfo else when.replace(tzinfo=loaded.timezone)
    return {"decision": decision, "at": local.isoformat()}
