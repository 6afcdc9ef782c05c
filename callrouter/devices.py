"""Which manager is behind a device: channel name -> device -> manager extension. Pure.

The managers come from the config or the store (anything with `extension` and
`devices`); this module knows nothing of either.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Protocol


class Manager(Protocol):
    @property
    def extension(self) -> str: ...
    @property
    def devices(self) -> tuple[str, ...]: ...


class DeviceMap:
    """Device (channel) -> manager extension. Configured devices first; otherwise the
    extension in the channel name (`PJSIP/101-0000a1`, `Local/101@phones-00000003;1` -> 101)."""

    def __init__(self, managers: Iterable[Manager] = ()):
        managers = tuple(managers)
        self._by_device: dict[str, str] = {}
        self.extensions = frozenset(m.extension for m in managers)
        for m in managers:
            for d in m.devices:
                self._by_device[d.lower()] = m.extension

    @staticmethod
    def device_of(channel_name: str) -> str:
        """`PJSIP/101-0000a1` -> `PJSIP/101`; `Local/101@phones-00000003;1` -> `Local/101@phones`."""
        name = channel_name.split(";", 1)[0]
        head, sep, tail = name.rpartition("-")
        if sep and head and re.fullmatch(r"[0-9a-fA-F]{6,8}", tail):
            return head
        return name

    def manager_of(self, channel_name: str) -> str | None:
        """The configured manager behind a channel's device, or None (no name-shape guess)."""
        return self._by_device.get(self.device_of(channel_name).lower())

    @classmethod
    def resource_of(cls, channel_name: str) -> str | None:
        """The resource of a channel name: `SIP/150010002-0000001a` -> `150010002`,
        `PJSIP/ivan-00000001` -> `ivan`, `Local/+31612345678@followme-0001;1` -> `+31612345678`."""
        _, sep, res = cls.device_of(channel_name).partition("/")
        res = res.split("@", 1)[0].strip()
        return res or None if sep else None

    def agent_of(self, channel_name: str) -> str | None:
        """The manager extension behind a channel, or None when it is not an agent's device
        (a trunk, a queue, a PSTN number). Unconfigured devices count when their resource is
        extension-shaped (2-6 digits) or a configured extension. Presence's guess for device
        states; the call tracker does not use it (it names parties by their role in the call,
        see `manager_of` and `resource_of`)."""
        device = self.device_of(channel_name)
        ext = self._by_device.get(device.lower())
        if ext is not None:
            return ext
        _, _, res = device.partition("/")
        res = res.split("@", 1)[0]
        if res in self.extensions or _EXTENSION.fullmatch(res):
            return res
        return None


_EXTENSION = re.compile(r"[0-9]{2,6}")
