"""Errors a user can act on.

Anything raised as a `StratosError` is shown by the CLI as one clean message (no traceback) with a
non-zero exit code; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class StratosError(Exception):
    """A problem with the user's input, environment or a remote service, explained in words."""

    exit_code = 2


class InputError(StratosError):
    """Bad input: a malformed file, an impossible constraint, an unknown name."""


class OfflineError(StratosError):
    """Something needs the network (a hub model, a cloud API) and none is reachable."""


class ResourceError(StratosError):
    """A plan cannot fit this machine or the chosen server (memory, disk, time)."""


class ServiceError(StratosError):
    """A remote endpoint failed after every retry."""
