"""The exceptions alignnet raises on purpose, so that callers (the CLI first) can tell a user's mistake from a bug.

- :class:`InputError` (a ``ValueError``): a value, name, shape, file or configuration the user gave cannot be
  used; its message says why and what would work. The CLI prints it as one line and exits with code 2.
- :class:`alignnet._optional.MissingExtraError` (an ``ImportError``): an optional package is not installed.

Any other exception, a plain ``ValueError`` or ``KeyError`` from torch, numpy or alignnet's own code among them,
is a bug and keeps its traceback.
"""

from __future__ import annotations

from ._optional import MissingExtraError

__all__ = ["InputError", "MissingExtraError", "USER_ERRORS"]


class InputError(ValueError):
    """The user's input cannot be used (the message says why); a ``ValueError`` for callers that catch those."""


# What the command line reports as one line with exit code 2: the user's input and the user's machine
# (files, permissions, the network), never a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, MissingExtraError, OSError)
