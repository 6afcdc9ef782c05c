"""The call log: AMI events -> tracker -> call facts -> enrichment -> reporters.

- `walk`: `CallLog` (one per PBX: the walk of one event, with presence beside it),
  `follow` (a live source), `replay` / `replay_records` (a capture; the CLI and tests).
- `reporters`: what consumes facts. `QueuedReporter` is the base every consumer shares
  (its own bounded queue and task, a drop counter): publishing never waits, so no
  reporter can stall the AMI path.
- `storing`: `RecordWriter`, the reporter that writes finished records to the store.
- `routes`: `RouteLog`, joins the router's decision to the call's record.
"""
