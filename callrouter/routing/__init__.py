"""Routing: caller ID -> client (lookup: in-memory directory over the store) -> rules
(rules: the validated model; engine: the pure decision) -> a RouteDecision, with
presence (who is free, learned from AMI) and the Router tying the live pieces together.

Import the modules themselves; this package imports nothing, so the pure parts
(rules, engine, types, presence) load without the async directory.
"""
