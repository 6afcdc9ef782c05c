"""The route decision log: every routing answer (`callrouter.routing.decision.RoutedCall`)
stored off the answer path, with a lead for an unknown caller.

- `process.DecisionLogProcess` (what the daemon uses): writes from a child process, so
  the database work does not hold the GIL the FastAGI answers need;
- `inline.InlineDecisionLog`: writes from the event loop (tests, tools, `agi.decision_log
  = "inline"`).

Both write under the same policy (`policy.POLICY`, a `callrouter.store.writer.WritePolicy`:
batches of 500 in one transaction each, 3 attempts) and offer the same interface to the
daemon: `submit(call) -> bool` (never blocks), `async run()` (the long-lived coroutine;
the caller's TaskGroup owns it), `async flush()`, `async close(timeout)` (then `run`
returns), `pending`, `stats` (`decisions`, `decision-failed`, `leads`, `dropped`; the
process adds `restarts`, `resent`).

Nothing is imported here: `from callrouter.decisionlog.process import DecisionLogProcess`.
"""
