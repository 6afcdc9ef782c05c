"""The decision logs' write policy (both logs; the process sends it to its child)."""
from __future__ import annotations

from callrouter.store.writer import WritePolicy

# batches of up to 500 decisions, one transaction each (the decisions and their leads);
# lingering 20 ms after the first so that a transaction carries many; a batch the
# database refuses is tried 3 times (0.5 s, then 1 s apart), then given up and counted
POLICY = WritePolicy(batch=500, linger=0.02, retry_min=0.5, retry_max=30.0, attempts=3)
