"""Sample data for the demo (pure: values in, values out; the same every run).

Managers with the extensions the recorded calls ring (101..110, 120, 121, 130), and a
few thousand clients with Russian mobile numbers, two thirds owned by a manager, monthly
turnovers spread across the shipped tiers (retail < 50,000 <= wholesale < 1,000,000 <=
key accounts), a few problem clients. The recordings' own caller (+7 916 123-45-67) is
Ivan Petrov, owned by 101, so the recorded owner calls route as they did on the PBX.
"""
from __future__ import annotations

import random

from callrouter.config import ManagerConfig
from callrouter.store import Client

MANAGER_NAMES = {"101": "Ivan Sokolov", "102": "Maria Ivanova", "103": "Pavel Orlov", "104": "Olga Smirnova",
                 "105": "Dmitry Volkov", "106": "Anna Kuznetsova", "107": "Sergey Popov", "108": "Elena Lebedeva",
                 "109": "Nikolai Kozlov", "110": "Tatiana Novikova", "120": "Retail desk", "121": "Wholesale desk",
                 "130": "Leads desk"}
OWNERS = tuple(e for e in MANAGER_NAMES if e < "120")   # people: one call at a time
DESKS = tuple(e for e in MANAGER_NAMES if e >= "120")   # teams: any number of calls
_FIRST = ("Ivan", "Pyotr", "Alexei", "Mikhail", "Andrei", "Natalia", "Irina", "Svetlana", "Yulia", "Ekaterina",
          "Boris", "Grigory", "Vera", "Lyudmila", "Roman")
_LAST = ("Petrov", "Sidorov", "Morozov", "Fedorov", "Belov", "Egorov", "Zaitsev", "Pavlov", "Semenov", "Golubev")
_COMPANY = ("Romashka", "Vektor", "Sever", "Uralstroy", "Baltika Trade", "Volga Logistics", "Alfa Opt", "Kedr",
            "Polyus", "Magistral")
RECORDED_CALLER = "+79161234567"


def managers() -> tuple[ManagerConfig, ...]:
    return tuple(ManagerConfig(extension=ext, name=name) for ext, name in MANAGER_NAMES.items())


def clients(n: int = 3000, seed: int = 18) -> list[Client]:
    rnd = random.Random(seed)
    owners = list(OWNERS)
    used = {RECORDED_CALLER}
    out = [Client(id="c-1001", name="Ivan Petrov", owner_extension="101", monthly_turnover=120_000,
                  phones=(RECORDED_CALLER,))]
    for i in range(2, n + 1):
        phone = RECORDED_CALLER
        while phone in used:
            phone = f"+79{rnd.randrange(10**9):09d}"
        used.add(phone)
        tier = rnd.random()
        # retail most, key accounts few; None: turnover not known to the CRM
        turnover = (None if tier < 0.1 else round(rnd.uniform(1_000, 49_000), 2) if tier < 0.6
                    else round(rnd.uniform(50_000, 990_000), 2) if tier < 0.92
                    else round(rnd.uniform(1_000_000, 20_000_000), 2))
        name = (f"OOO {rnd.choice(_COMPANY)} {i}" if rnd.random() < 0.4
                else f"{rnd.choice(_FIRST)} {rnd.choice(_LAST)}")
        out.append(Client(id=f"c-{1000 + i}", name=name,
                          owner_extension=rnd.choice(owners) if rnd.random() < 0.67 else None,
                          monthly_turnover=turnover, problem=rnd.random() < 0.02, phones=(phone,)))
    return out


# Who calls in each recorded call, so the router sends the call where the recording rings:
#   owner:EXT  the recording rings owner EXT first; a copy rings a free manager instead
#              (run.plan_call) and the caller is one of that manager's clients, so their
#              screen-pop shows their own client's card and the router's "owner" decision
#   tier:NAME  an unowned client of that tier      unknown   a number no client has
#   recorded   the recording's own caller
SCENARIO_CALLERS = {"answered_owner": "owner:101", "caller_hangs_up": "owner:101", "caller_abandons": "owner:101",
                    "blind_transfer": "owner:101", "owner_busy_fallback": "owner:103",
                    "owner_noanswer_fallback": "owner:102", "queue_answered": "tier:retail",
                    "queue_abandon": "tier:wholesale", "unknown_caller": "unknown", "anonymous": "recorded",
                    "ring_group": "unknown"}
# the shipped tiers (rules/10-tiers.yaml): retail < 50,000 <= wholesale < 1,000,000 <= key accounts
TIERS = ((1_000_000, "key-accounts"), (50_000, "wholesale"), (0, "retail"))


def tier_of(turnover: float | None) -> str:
    """The shipped tier of a monthly turnover (none known: the first tier)."""
    return next((name for floor, name in TIERS if turnover is not None and turnover >= floor), "retail")


def caller_pools(clients: list[Client]) -> dict[str, list[str]]:
    """Callers by SCENARIO_CALLERS key, as the PBX sends them (digits, no '+'); problem
    clients (routed to support) are left out."""
    pools: dict[str, list[str]] = {}
    for c in clients:
        if c.problem or c.blocked or not c.phones:
            continue
        key = f"owner:{c.owner_extension}" if c.owner_extension else f"tier:{tier_of(c.monthly_turnover)}"
        pools.setdefault(key, []).append(c.phones[0].lstrip("+"))
    return pools
