"""Optional dependencies: which install extra provides which package, and one way to ask for one.

The base install (``pip install alignnet``) loads, converts, explains, compares and evaluates every model,
runs the demo and reads and writes videos. Each extra adds one job (docs/install.md):

- ``train``: Lightning, for ``alignnet train`` and :mod:`alignnet.train`;
- ``web``: FastAPI, uvicorn and python-multipart, for ``alignnet serve`` and :mod:`alignnet.serve.app`;
- ``lime``: scikit-image, for the LIME attribution method (quickshift superpixels).

Code that needs one of them calls :func:`require` where it needs it (never at import time of a module that
the base paths import), so a missing extra is one line naming it, not a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

# importable top-level module -> the extra that installs it
EXTRAS: dict[str, str] = {
    "lightning": "train",
    "fastapi": "web",
    "starlette": "web",
    "uvicorn": "web",
    "multipart": "web",
    "python_multipart": "web",
    "skimage": "lime",
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        self.feature, self.module, self.extra = feature, module, extra
        super().__init__(
            f'{feature} needs the {extra} extra ({module} is not installed): pip install "alignnet[{extra}]"'
        )


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` (a package of an extra in :data:`EXTRAS`) or raise :class:`MissingExtraError`
    saying that ``feature`` needs that extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = (exc.name or module).split(".")[0]
        top = module.split(".")[0]
        extra = EXTRAS.get(missing) or EXTRAS.get(top)
        if extra is None:
            raise
        raise MissingExtraError(feature, missing, extra) from None


def extra_for(exc: BaseException) -> str | None:
    """The extra that would have prevented this ``ModuleNotFoundError`` (``None``: not an extra's package)."""
    if isinstance(exc, MissingExtraError):
        return exc.extra
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return EXTRAS.get(exc.name.split(".")[0])
    return None
