"""FastAGI edge: Asterisk asks `agi://callrouter:4573/route` where to send a call."""
from callrouter.agi.server import Answered, DecisionRecorder, FastAgiServer
from callrouter.agi.service import RoutingService

__all__ = ["Answered", "DecisionRecorder", "FastAgiServer", "RoutingService"]
