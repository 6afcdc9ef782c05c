"""Finished calls out to the CRM: one signed POST per finished call record.

    AMI -> tracker -> CallFinished -> WebhookReporter (a QueuedReporter: its queue, never
    blocks the call log) -> Outbox (a table in the spool file, on disk) -> delivery loop
    (POST, retry with backoff, dead letters) -> the CRM's URL

`signing.py` signs (and verifies: the receiver's side, also in README); `outbox.py` is
the durable queue; `delivery.py` the reporter and the delivery loop.
"""
from .delivery import WebhookReporter
from .signing import sign, verify

__all__ = ["WebhookReporter", "sign", "verify"]
