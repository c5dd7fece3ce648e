"""Setup errors: one exception family for problems that are not the child architecture's fault.

A missing or corrupt dataset, a device that does not exist, an unreadable benchmark table: each would fail
every child the same way, so a search stops on the first one with its one-line message instead of recording
every child as failed. Messages are one line naming the problem and what to do about it.
"""

from __future__ import annotations

__all__ = ["DeviceError", "SetupError"]


class SetupError(Exception):
    """A problem with the machine, data or settings rather than with the child architecture.

    It would fail every child the same way, so a search stops on it with its one-line message.
    """


class DeviceError(SetupError):
    """The requested device does not exist on this machine (e.g. ``cuda`` where torch sees no GPU)."""
