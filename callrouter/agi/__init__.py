"""FastAGI edge: Asterisk asks `agi://callrouter:4573/route` where to send a call.

`protocol` (pure: parsing and quoting) and `server` (the asyncio server). Import the
modules themselves: this package imports nothing.
"""
