"""callrouter: routes inbound Asterisk calls and logs every call."""

__version__ = "0.1.0"
