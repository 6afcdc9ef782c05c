"""The call tracker: AMI events in, call facts out. Pure: no IO, no clock."""
from .facts import AgentAnswered, AgentEnded, AgentRinging, CallFinished, Fact, LiveCall
from .tracker import Tracker

__all__ = ["AgentAnswered", "AgentEnded", "AgentRinging", "CallFinished", "Fact", "LiveCall", "Tracker"]
