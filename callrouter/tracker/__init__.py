"""The call tracker: AMI events in, call facts out. Pure: no IO, no clock."""
from .facts import AgentAnswered, AgentEnded, AgentRinging, CallFinished, Fact
from .tracker import Tracker, replay

__all__ = ["AgentAnswered", "AgentEnded", "AgentRinging", "CallFinished", "Fact", "Tracker", "replay"]
