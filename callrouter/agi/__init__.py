"""FastAGI edge: Asterisk asks `agi://callrouter:4573/route` where to send a call.

- `protocol`: the FastAGI wire format (header block, SET/GET VARIABLE, replies); pure;
- `server`: `FastAgiServer`, one `asyncio.Protocol` per call, answering from the Router
  and handing each answer (`callrouter.routing.decision.RoutedCall`) to a recorder;
- `service`: `RoutingService`, the routing side of the daemon wired together.

Nothing is imported here: importing `callrouter.agi.protocol` loads only the protocol.
"""
