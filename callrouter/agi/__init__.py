"""FastAGI edge: Asterisk asks `agi://callrouter:4573/route` where to send a call."""
from callrouter.agi.decisionlog import DecisionLogProcess, DecisionRecorder
from callrouter.agi.server import Answered, FastAgiServer
from callrouter.agi.service import RoutingService

__all__ = ["Answered", "DecisionLogProcess", "DecisionRecorder", "FastAgiServer", "RoutingService"]
