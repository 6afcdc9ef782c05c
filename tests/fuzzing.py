"""Hypothesis settings shared by the fuzz tests (tests/test_fuzz_*.py).

Example counts are modest so the suite stays fast; a longer run by hand:
    CALLROUTER_FUZZ_EXAMPLES=2000 .venv/bin/pytest -q -p no:cacheprovider tests/test_fuzz_*.py
No example database: a run leaves nothing behind in the worktree (a failure prints the
example to reproduce, and each crash found is pinned by a regression test).

The suite's run is derandomized (the same examples for the same code on every run), so a
commit's test result does not depend on the draw; a run with CALLROUTER_FUZZ_EXAMPLES set
draws fresh examples each time, which is how new inputs get explored."""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "callrouter-fuzz", deadline=None, database=None, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture])
PROFILE = settings.get_profile("callrouter-fuzz")


def fuzz(default_examples: int) -> settings:
    """The profile with `default_examples` examples, derandomized; CALLROUTER_FUZZ_EXAMPLES=N
    asks for N examples drawn afresh."""
    scale = os.environ.get("CALLROUTER_FUZZ_EXAMPLES")
    if scale:
        return settings(PROFILE, max_examples=int(scale))
    return settings(PROFILE, max_examples=default_examples, derandomize=True)
