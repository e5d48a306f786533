"""Pretrained weights: a registry of weights entries, separate from the architecture registry.

An entry names an architecture (``create_model`` name and arguments), its class names and input
spec, where its bytes come from (a file shipped in the package, or a URL with its SHA-256) and what
it reproduces. ``load_pretrained(name)`` returns the model with its weights; the shipped
Fashion-MNIST entries need no network, the official B-cos v2 ImageNet entries are downloaded once:

1. ``$ALIGNNET_HOME/downloads/<file name of the URL>`` (default ``~/.cache/alignnet``) is written
   through a temporary file with a progress bar, its SHA-256 checked (the full digest when the entry
   has one; otherwise the hash prefix in the file name, torch hub's convention, and from the second
   time on the full digest recorded in ``$ALIGNNET_HOME/sha256.json`` the first time a file of that
   name was verified) and renamed into place: a killed download never leaves a file that later loads;
2. the file is read with ``torch.load(weights_only=True)`` (nothing else is ever unpickled) and
   converted (:func:`alignnet.models.from_bcos` for the release checkpoints);
3. the converted model is kept as ``$ALIGNNET_HOME/weights/<name>-<key>.safetensors`` (atomic rename;
   ``<key>`` hashes every input of the conversion, :func:`_cache_key`) and the download is removed;
   later calls read only that file, offline.

Steps 1-3 run under a lock file in ``$ALIGNNET_HOME/locks/`` per download, so processes loading the
same weights at once wait for one another instead of deleting a file another one is reading.

``ALIGNNET_WEIGHTS_MIRROR`` replaces the base URL of the official entries (same file names), for
mirrors and air-gapped sites; a file put by hand at the download path above is verified and used.
Downloads happen only when a pretrained model is asked for by name. See docs/pretrained.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import hashlib
import http.client
import inspect
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from .errors import InputError
from .models._registry import PAPER_BCOS_V2, InputSpec

__all__ = [
    "OFFICIAL_BASE_URL",
    "WeightsDownloadError",
    "WeightsEntry",
    "availability",
    "cache_dir",
    "default_weights",
    "get_weights",
    "imagenet_classes",
    "is_cached",
    "list_pretrained",
    "load_pretrained",
    "register_weights",
    "weights_file",
]

OFFICIAL_BASE_URL = "https://github.com/B-cos/B-cos-v2/releases/download/v0.0.1-weights"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")  # torch hub: "<name>-<first hex digits of sha256>.<ext>"
_CHUNK = 1 << 20
_CACHE_FORMAT = 1  # part of every cache key: raise it when a conversion changes, and every entry is converted again


class WeightsDownloadError(ConnectionError):
    """The weights could not be fetched; the message says where to put the file by hand."""


@dataclass(frozen=True)
class WeightsEntry:
    """One set of pretrained weights.

    Attributes
    ----------
    name: the weights name (``load_pretrained(name)``, ``--model name``).
    arch, arch_args: the ``create_model`` name and arguments the weights fit.
    classes: the class names, or ``"imagenet"`` / ``"fashion_mnist"`` for the shipped lists.
    file: a file in the package's ``weights/`` folder (shipped entries), or None.
    url, sha256: where to download and the full SHA-256 (hex); official entries carry only the hash
        prefix in their file name, which is checked instead.
    fmt: ``"safetensors"`` (an ``alignnet.save_model`` file), ``"bcos"`` (a ``bcos``-package state dict,
        converted by ``from_bcos``) or ``"state_dict"`` (our own state dict in a ``.pth``).
    input_spec: overrides the architecture's spec (e.g. the Fashion-MNIST style of the shipped models).
    accuracy, dataset, paper: what the weights reproduce (top-1 % on ``dataset``).
    default: the entry ``create_model(arch, pretrained=True)`` picks.
    official: an official release file (``ALIGNNET_WEIGHTS_MIRROR`` applies).
    """

    name: str
    arch: str
    arch_args: dict = field(default_factory=dict)
    classes: str | tuple[str, ...] = "imagenet"
    file: str | None = None
    url: str | None = None
    sha256: str | None = None
    fmt: str = "state_dict"
    input_spec: InputSpec | None = None
    accuracy: float | None = None
    dataset: str = "ImageNet"
    paper: str = ""
    default: bool = False
    official: bool = False

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.classes == "imagenet":
            return imagenet_classes()
        if self.classes == "fashion_mnist":
            from .data import FASHION_MNIST_CLASSES

            return FASHION_MNIST_CLASSES
        return tuple(self.classes)

    @property
    def resolved_url(self) -> str | None:
        """The URL after ``ALIGNNET_WEIGHTS_MIRROR`` (official entries only)."""
        mirror = os.environ.get("ALIGNNET_WEIGHTS_MIRROR")
        if self.url and self.official and mirror:
            return mirror.rstrip("/") + "/" + self.url.rsplit("/", 1)[1]
        return self.url

    @property
    def expected_hash(self) -> str | None:
        """The full SHA-256, or the hash prefix in the URL's file name (lower-case hex)."""
        if self.sha256:
            return self.sha256.lower()
        if self.url:
            m = _HASH_IN_NAME.search(self.url.rsplit("/", 1)[1])
            return m.group(1) if m else None
        return None


_ENTRIES: dict[str, WeightsEntry] = {}


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names, in the standard class-index order (shipped with the package)."""
    text = resources.files("alignnet").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def cache_dir() -> Path:
    """``$ALIGNNET_HOME`` or ``~/.cache/alignnet``: where downloads and converted weights live."""
    return Path(os.environ.get("ALIGNNET_HOME") or Path.home() / ".cache" / "alignnet").expanduser()


def register_weights(
    name: str,
    arch: str,
    *,
    url: str | None = None,
    sha256: str | None = None,
    file: str | os.PathLike | None = None,
    class_names: list[str] | tuple[str, ...] | str = "imagenet",
    arch_args: dict | None = None,
    fmt: str | None = None,
    input_spec: InputSpec | dict | None = None,
    accuracy: float | None = None,
    dataset: str = "",
    paper: str = "",
    default: bool = False,
    overwrite: bool = False,
) -> WeightsEntry:
    """Register weights of your own (your hub, a mirror, a ``file://`` URL).

    ``url`` needs ``sha256`` (64 hex digits) unless its file name carries a hash prefix
    (``name-<hex>.pth``); ``fmt`` defaults from the file name: ``.safetensors`` files are
    ``alignnet.save_model`` files, anything else is a state dict loaded with ``weights_only=True``
    (``fmt="bcos"`` for checkpoints of the ``bcos`` package). Returns the entry.
    """
    from .models import list_models

    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        raise InputError(f"weights name must be letters, digits, '_', '-', '.', got {name!r}")
    if name in _ENTRIES and not overwrite:
        raise InputError(f"weights {name!r} are already registered (pass overwrite=True to replace them)")
    if arch not in list_models():
        close = difflib.get_close_matches(arch, list_models(), n=3)
        raise InputError(f"unknown architecture {arch!r}" + (f"; did you mean {', '.join(close)}?" if close else ""))
    if (url is None) == (file is None):
        raise InputError("give exactly one of url= (downloaded and cached) or file= (a local file)")
    if url is not None:
        scheme = urllib.parse.urlparse(url).scheme
        if scheme not in ("http", "https", "file"):
            raise InputError(f"url must be http(s):// or file://, got {url!r}")
        if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
            raise InputError(f"sha256 must be 64 hex digits, got {sha256!r}")
        if sha256 is None and not _HASH_IN_NAME.search(url.rsplit("/", 1)[1]):
            raise InputError("a url entry needs sha256= (64 hex digits): downloaded weights are always verified")
    source = str(url or file)
    fmt = fmt or ("safetensors" if source.endswith(".safetensors") else "state_dict")
    if fmt not in ("safetensors", "bcos", "state_dict"):
        raise InputError(f"fmt must be 'safetensors', 'bcos' or 'state_dict', got {fmt!r}")
    if isinstance(input_spec, dict):
        input_spec = InputSpec.from_dict(input_spec)
    entry = WeightsEntry(
        name=name,
        arch=arch,
        arch_args=dict(arch_args or {}),
        classes=class_names if isinstance(class_names, str) else tuple(class_names),
        file=str(Path(file).absolute()) if file is not None else None,
        url=url,
        sha256=sha256,
        fmt=fmt,
        input_spec=input_spec,
        accuracy=accuracy,
        dataset=dataset,
        paper=paper,
        default=default,
    )
    if isinstance(entry.classes, str) and entry.classes not in ("imagenet", "fashion_mnist"):
        raise InputError("class_names must be a list of names, 'imagenet' or 'fashion_mnist'")
    _add(entry)
    return entry


def _add(entry: WeightsEntry) -> None:
    """Put ``entry`` in the registry; a default entry takes over as its architecture's only default."""
    if entry.default:
        for other in list(_ENTRIES.values()):
            if other.arch == entry.arch and other.default and other.name != entry.name:
                _ENTRIES[other.name] = dataclasses.replace(other, default=False)
    _ENTRIES[entry.name] = entry


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names of the registered weights matching the shell-style ``pattern``, sorted."""
    return sorted(n for n in _ENTRIES if fnmatch.fnmatchcase(n, pattern))


def get_weights(name: str) -> WeightsEntry:
    """The entry named ``name``; unknown names raise ``ValueError`` with close matches."""
    if not isinstance(name, str):
        raise TypeError(f"weights name must be a string, got {type(name).__name__}")
    if name not in _ENTRIES:
        close = difflib.get_close_matches(name, list(_ENTRIES), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see alignnet.list_pretrained()"
        raise InputError(f"no pretrained weights named {name!r}{hint}")
    return _ENTRIES[name]


def default_weights(arch: str) -> WeightsEntry:
    """The default weights of architecture ``arch`` (``create_model(arch, pretrained=True)``)."""
    for entry in _ENTRIES.values():
        if entry.arch == arch and entry.default:
            return entry
    have = sorted({e.arch for e in _ENTRIES.values() if e.default})
    raise InputError(f"architecture {arch!r} has no pretrained weights; architectures with weights: {', '.join(have)}")


def _shipped_path(file: str) -> Path:
    path = Path(str(resources.files("alignnet").joinpath("weights", file)))
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped weights file {path} is missing from this installation; reinstall alignnet "
            "(pip install --force-reinstall alignnet)"
        )
    return path


def _is_shipped(entry: WeightsEntry) -> bool:
    """A file of the package's ``weights/`` folder (a relative name); ``file=`` entries hold absolute paths."""
    return entry.file is not None and not Path(entry.file).is_absolute()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock(name: str):
    """An inter-process lock ``$ALIGNNET_HOME/locks/<name>.lock`` (``filelock``, a dependency of torch).

    The lock file stays (it is empty); the lock is the OS's and dies with its process.
    """
    from filelock import FileLock

    folder = cache_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{name}.lock"))


def _url_file_name(entry: WeightsEntry) -> str:
    return urllib.parse.urlparse(entry.url).path.rsplit("/", 1)[1]


def _digest_record() -> Path:
    """Full SHA-256 of the files verified only by a hash prefix, recorded the first time (trust on first use)."""
    return cache_dir() / "sha256.json"


def _recorded_digests() -> dict[str, str]:
    path = _digest_record()
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); delete it to record the digests again") from None
    if not isinstance(record, dict):
        raise InputError(f"{path} must hold a JSON object of file name -> sha256; delete it to record them again")
    return record


def _record_digest(file_name: str, digest: str) -> str:
    """Record ``digest`` for ``file_name`` unless one is recorded already; return the one on record."""
    path = _digest_record()
    with _lock(path.name):
        record = _recorded_digests()
        if file_name in record:
            return record[file_name]
        record[file_name] = digest
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(record, out, indent=1, sort_keys=True)
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    return digest


def _verify(entry: WeightsEntry, digest: str, where: str) -> None:
    """Raise ``ValueError`` unless ``digest`` (the SHA-256 of ``where``) is what ``entry`` expects.

    Entries with a full ``sha256`` are checked against it. Entries known only by the hash prefix in their
    file name are checked against the prefix, then against the full digest recorded in ``sha256.json`` the
    first time a file of that name passed (trust on first use). The callers say what happened to the file.
    """
    expected = entry.expected_hash
    if expected is None:
        raise InputError(f"weights {entry.name!r} have no sha256 to verify {where} against")
    if not digest.startswith(expected):
        raise InputError(
            f"sha256 mismatch for weights {entry.name!r} ({where}): expected {expected}"
            f"{'' if len(expected) == 64 else ' (prefix)'}, got {digest}"
        )
    if len(expected) == 64 or entry.url is None:
        return
    name = _url_file_name(entry)
    known = _recorded_digests().get(name) or _record_digest(name, digest)
    if known != digest:
        raise InputError(
            f"sha256 mismatch for weights {entry.name!r} ({where}): its sha256 {digest} starts with the {expected} "
            f"of its name but differs from the one recorded when a file {name} was first verified, {known} (in "
            f"{_digest_record()}); if the release file really changed, delete that line"
        )


def _download(entry: WeightsEntry, dest: Path, progress: bool) -> None:
    """Fetch ``entry``'s URL to ``dest`` through a temporary file; verify; atomic rename."""
    url = entry.resolved_url
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:  # closed on every path, the failed ones included
            digest = _fetch(entry, url, out, dest, progress)
        try:
            _verify(entry, digest, f"downloaded from {url}")
        except ValueError as exc:
            raise InputError(f"{exc}; the download was not kept") from None
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _fetch(entry: WeightsEntry, url: str, out, dest: Path, progress: bool) -> str:
    """Write the body of ``url`` to ``out``; return its SHA-256. ``WeightsDownloadError`` says where ``dest`` is."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "alignnet"})
        with urllib.request.urlopen(request, timeout=60) as response:
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done = 0
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=f"downloading {entry.name}", disable=not progress
            ) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    bar.update(len(block))
        if total is not None and done != total:
            raise WeightsDownloadError(f"the download of {url} stopped after {done} of {total} bytes")
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
        if isinstance(exc, WeightsDownloadError):
            raise
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"HTTP {exc.code} {exc.reason}"
            exc.close()
        else:
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise WeightsDownloadError(
            f"cannot download the weights {entry.name!r} from {url} ({reason}). Without a network, fetch "
            f"that file elsewhere and put it at {dest} (it is verified before use), or set "
            "ALIGNNET_WEIGHTS_MIRROR to a base URL (https://... or file:///folder) that has the release files"
            if entry.official
            else f"cannot download the weights {entry.name!r} from {url} ({reason}); put the file at {dest} "
            "by hand (it is verified before use)"
        ) from None
    return digest.hexdigest()


def _verified_download(entry: WeightsEntry, raw: Path, progress: bool) -> None:
    """Make ``raw`` the verified file of ``entry``: a file already there (put by hand, or left by an older
    version) is used if it passes, otherwise deleted and downloaded again, once."""
    note = ""
    if raw.is_file():
        try:
            _verify(entry, _sha256(raw), f"the file {raw}")
            return
        except ValueError as exc:
            raw.unlink(missing_ok=True)
            note = f"{raw} failed its sha256 check and was deleted ({exc})"
    try:
        _download(entry, raw, progress)
    except (WeightsDownloadError, ValueError) as exc:
        if note:
            raise type(exc)(f"{note}; downloading it again failed: {exc}") from None
        raise


def _arch_defaults(arch: str) -> dict:
    from .models import list_models, model_entrypoint

    if arch not in list_models():
        return {}
    params = inspect.signature(model_entrypoint(arch)).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _check_arch(entry: WeightsEntry, path: Path) -> None:
    """An ``alignnet.save_model`` file must hold the architecture and arguments ``entry`` declares.

    Reads the header only. A B-cosified file (``load_model`` rebuilds it from its recipe) counts as
    ``bcosify(<source architecture>)`` with the source's arguments.
    """
    from safetensors import SafetensorError, safe_open

    from .models.io import _ARGS, _NAME

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
        arch, args = metadata.get(_NAME), json.loads(metadata.get(_ARGS, "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{path} is not a readable safetensors file (corrupt or another format): {exc}") from None
    if arch is None or not isinstance(args, dict):
        return  # no alignnet metadata: load_model says so
    if arch == "bcosified" and isinstance(args.get("source"), dict):
        arch, args = f"bcosify({args['source'].get('name')})", args["source"].get("args", {})
    have = {**_arch_defaults(arch), **args}
    if arch != entry.arch or any(k not in have or have[k] != v for k, v in entry.arch_args.items()):
        raise InputError(
            f"the weights {entry.name!r} are registered as {entry.arch!r} with {entry.arch_args} but {path} holds "
            f"a {arch!r} with {args}; register them with the architecture and arguments of the file"
        )


def _convert(entry: WeightsEntry, raw: Path) -> nn.Module:
    """Build ``entry``'s model from the verified file ``raw``."""
    from .models import create_model, from_bcos, load_model
    from .models.io import load_weights

    if entry.fmt == "safetensors":
        _check_arch(entry, raw)
        return load_model(raw)
    try:
        state = torch.load(raw, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling refusal or corruption: one clear message
        raise InputError(f"{raw} is not a loadable state dict (corrupt, or not weights-only): {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{raw} does not hold a state dict (got {type(state).__name__})")
    if entry.fmt == "bcos":
        return from_bcos(entry.arch, state, **entry.arch_args)
    model = create_model(entry.arch, **entry.arch_args)
    return load_weights(model, state, source=str(raw))


def _cache_key(entry: WeightsEntry, content: str | None) -> str:
    """16 hex digits of the SHA-256 of every input of the conversion: the source's content (``content``,
    the SHA-256 of a local file; a URL's content is pinned by its verified hash), URL, expected hash, format,
    architecture and arguments, and the conversion's version. Not the mirror: the same verified file
    converts the same from anywhere."""
    inputs = {
        "cache_format": _CACHE_FORMAT,
        "content": content,
        "url": entry.url,
        "sha256": entry.expected_hash,
        "fmt": entry.fmt,
        "arch": entry.arch,
        "arch_args": entry.arch_args,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def _cached(entry: WeightsEntry, content: str | None = None) -> tuple[Path, bool]:
    """The converted file of ``entry`` (``content``: the SHA-256 of a local source file) and whether it exists:
    the one answer to "is it cached" (:func:`weights_file`, :func:`availability`)."""
    path = cache_dir() / "weights" / f"{entry.name}-{_cache_key(entry, content)}.safetensors"
    return path, path.is_file()


def _convert_to(entry: WeightsEntry, raw: Path, converted: Path) -> None:
    """Convert ``raw`` and write ``converted`` through a temporary file and an atomic rename."""
    from .models import save_model

    model = _convert(entry, raw)
    converted.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{converted.stem}.", suffix=".safetensors", dir=converted.parent)
    os.close(fd)
    try:
        save_model(model, tmp_name)
        os.replace(tmp_name, converted)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def weights_file(name: str, progress: bool = True) -> Path:
    """A local ``.safetensors`` file with the weights ``name``, downloading and converting them if needed.

    Raises :class:`WeightsDownloadError` (no network: says where to put the file by hand),
    ``ValueError`` (hash mismatch, corrupt file, wrong architecture) or ``FileNotFoundError``.
    Safe with other processes loading the same weights at the same time.
    """
    entry = get_weights(name)
    if _is_shipped(entry):
        path = _shipped_path(entry.file)
        _check_arch(entry, path)
        return path
    if entry.file is not None:
        return _local_weights_file(entry)
    converted, cached = _cached(entry)
    if cached:
        return converted
    raw = cache_dir() / "downloads" / _url_file_name(entry)
    # one process at a time fetches, verifies, converts and deletes the download; the others then find
    # the converted file, which only ever appears whole (atomic rename) and is never deleted
    with _lock(raw.name):
        if converted.is_file():
            return converted
        _verified_download(entry, raw, progress)
        _convert_to(entry, raw, converted)  # a failed conversion keeps the verified download for the next try
        raw.unlink(missing_ok=True)  # the converted file is all later calls read
    return converted


def _local_weights_file(entry: WeightsEntry) -> Path:
    """``file=`` entries: verified when they carry a sha256; ``.safetensors`` files used in place, others
    converted once per content (the cache key holds the file's SHA-256, so edits and new files count)."""
    raw = Path(entry.file)
    if not raw.is_file():
        raise FileNotFoundError(f"the weights file of {entry.name!r} does not exist: {raw}")
    content = _sha256(raw) if entry.sha256 or entry.fmt != "safetensors" else None
    if entry.sha256:
        try:
            _verify(entry, content, f"the file {raw}")
        except ValueError as exc:
            raise InputError(f"{exc}; the file is left as it is: fix it or the entry's sha256=") from None
    if entry.fmt == "safetensors":
        _check_arch(entry, raw)
        return raw
    converted, cached = _cached(entry, content)
    if not cached:
        with _lock(converted.name):
            if not converted.is_file():
                _convert_to(entry, raw, converted)
    return converted


def availability(name: str) -> str:
    """Where the weights ``name`` come from now: ``"shipped"`` (in the package), ``"local file"`` (a ``file=``
    entry), ``"cached"`` (converted before: offline) or ``"download"`` (the next load needs the network)."""
    return _availability(get_weights(name))


def _availability(entry: WeightsEntry) -> str:
    if entry.file is not None:
        return "shipped" if _is_shipped(entry) else "local file"
    return "cached" if _cached(entry)[1] else "download"


def is_cached(name: str) -> bool:
    """True when ``load_pretrained(name)`` needs no network (shipped, local file, or already converted)."""
    return availability(name) != "download"


def load_pretrained(name: str, progress: bool = True, device: str | torch.device | None = None) -> nn.Module:
    """The model with the pretrained weights ``name`` (see :func:`list_pretrained`), in eval mode.

    The model carries ``class_names``, ``input_spec``, ``weights_name`` and ``source``. Shipped
    entries never touch the network; others are downloaded once (module docstring).
    """
    from .models import load_model

    entry = get_weights(name)
    path = weights_file(name, progress=progress)
    model = load_model(path)
    model.class_names = entry.class_names
    if entry.input_spec is not None:
        model.input_spec = entry.input_spec
    model.weights_name = entry.name
    model.source = f"pretrained weights {entry.name} ({path})"
    if device is not None:
        model = model.to(device)
    return model.eval()


def describe(entry: WeightsEntry) -> dict:
    """A JSON-friendly summary of ``entry`` (``alignnet models --pretrained``); ``status`` is
    :func:`availability`."""
    return {
        "name": entry.name,
        "arch": entry.arch,
        "arch_args": entry.arch_args,
        "dataset": entry.dataset,
        "accuracy": entry.accuracy,
        "source": "shipped" if _is_shipped(entry) else entry.file or entry.resolved_url,
        "status": _availability(entry),
        "default": entry.default,
        "paper": entry.paper,
    }


# -- the entries ---------------------------------------------------------------------------------------

_FMNIST_SPEC = InputSpec(size=(32, 32), style="fashion_mnist")
_SHIPPED = [
    # name, file, arch, args, measured top-1 on all 10,000 Fashion-MNIST test images (benchmarks/RESULTS.md)
    ("fmnist_bcos", "fmnist_bcos.safetensors", "bcos_cifar10_9l", {"width": 0.25}, 90.68),
    ("fmnist_coda", "fmnist_coda.safetensors", "coda_cifar10_9l", {"width": 0.25}, 88.67),
    # the plain CNN of the same shape (fmnist-cnn preset) B-cosified and fine-tuned (bcosify-fmnist preset); the
    # file records its recipe, so load_model rebuilds it (docs/bcosification.md)
    ("fmnist_bcosified", "fmnist_bcosified.safetensors", "bcosify(plain_cnn_9l)", {"width": 0.25}, 89.00),
]
for _name, _file, _arch, _args, _acc in _SHIPPED:
    _add(
        WeightsEntry(
            name=_name,
            arch=_arch,
            arch_args=_args,
            classes="fashion_mnist",
            file=_file,
            fmt="safetensors",
            input_spec=_FMNIST_SPEC,
            accuracy=_acc,
            dataset="Fashion-MNIST",
            paper="alignnet, trained with the fmnist presets (docs/training.md)",
            default=False,
        )
    )

# The official B-cos v2 release (the ``bcos`` package's ``bcos/models/pretrained.py``): weights name,
# release file, our architecture, reported ImageNet top-1 (%). The first entry of an architecture is its default.
_OFFICIAL = [
    ("bcos_resnet18", "resnet_18-68b4160fff.pth", "bcos_resnet18", 68.736),
    ("bcos_resnet34", "resnet_34-a63425a03e.pth", "bcos_resnet34", 72.284),
    ("bcos_resnet50", "resnet_50-ead259efe4.pth", "bcos_resnet50", 75.882),
    ("bcos_resnet101", "resnet_101-84c3658278.pth", "bcos_resnet101", 76.532),
    ("bcos_resnet152", "resnet_152-42051a77c1.pth", "bcos_resnet152", 76.484),
    ("bcos_resnext50_32x4d", "resnext_50_32x4d-57af241ab9.pth", "bcos_resnext50_32x4d", 75.820),
    ("bcos_densenet121", "densenet_121-b8daf96afb.pth", "bcos_densenet121", 73.612),
    ("bcos_densenet161", "densenet_161-9e9ea51353.pth", "bcos_densenet161", 76.622),
    ("bcos_densenet169", "densenet_169-7037ee0604.pth", "bcos_densenet169", 75.186),
    ("bcos_densenet201", "densenet_201-00ac87066f.pth", "bcos_densenet201", 75.480),
    ("bcos_vgg11_bnu", "vgg_11_bnu-34036029f0.pth", "bcos_vgg11_bnu", 69.310),
    ("bcos_convnext_tiny", "convnext_tiny_pn-539b1bfb37.pth", "bcos_convnext_tiny", 77.488),
    ("bcos_convnext_base", "convnext_base_pn-b0495852c6.pth", "bcos_convnext_base", 79.650),
    ("bcos_convnext_tiny_bnu", "convnext_tiny_bnu-dbd7f5ef9d.pth", "bcos_convnext_tiny_bnu", 76.826),
    ("bcos_convnext_base_bnu", "convnext_base_bnu-7c32a704b3.pth", "bcos_convnext_base_bnu", 80.142),
    ("bcos_densenet121_long", "densenet_121_long-5175461597.pth", "bcos_densenet121", 77.302),
    ("bcos_resnet50_long", "resnet_50_long-ef38a88533.pth", "bcos_resnet50", 79.468),
    ("bcos_resnet152_long", "resnet_152_long-0b4b434939.pth", "bcos_resnet152", 80.144),
    ("bcos_simple_vit_ti", "bcos_simple_vit_ti_patch16_224-4b0824b1c1.pth", "bcos_simple_vit_ti", 59.960),
    ("bcos_simple_vit_s", "bcos_simple_vit_s_patch16_224-75e99d1f73.pth", "bcos_simple_vit_s", 69.246),
    ("bcos_simple_vit_b", "bcos_simple_vit_b_patch16_224-1fc4750806.pth", "bcos_simple_vit_b", 74.408),
    ("bcos_simple_vit_l", "bcos_simple_vit_l_patch16_224-9613b2ad0a.pth", "bcos_simple_vit_l", 75.060),
    ("bcos_vitc_ti", "bcos_vitc_ti_patch1_14-ddd6193a77.pth", "bcos_vitc_ti", 67.260),
    ("bcos_vitc_s", "bcos_vitc_s_patch1_14-cf55c88f0c.pth", "bcos_vitc_s", 74.504),
    ("bcos_vitc_b", "bcos_vitc_b_patch1_14-a13c46397b.pth", "bcos_vitc_b", 77.152),
    ("bcos_vitc_l", "bcos_vitc_l_patch1_14-8739e18b8d.pth", "bcos_vitc_l", 77.782),
    ("simple_vit_ti", "standard_simple_vit_ti_patch16_224-2ae8c65a39.pth", "simple_vit_ti", 70.230),
    ("simple_vit_s", "standard_simple_vit_s_patch16_224-f2934fcdcf.pth", "simple_vit_s", 74.470),
    ("simple_vit_b", "standard_simple_vit_b_patch16_224-87074200ed.pth", "simple_vit_b", 75.300),
    ("simple_vit_l", "standard_simple_vit_l_patch16_224-62dc536e03.pth", "simple_vit_l", 75.710),
    ("vitc_ti", "standard_vitc_ti_patch1_14-a5d6bded37.pth", "vitc_ti", 72.590),
    ("vitc_s", "standard_vitc_s_patch1_14-34ecd7288e.pth", "vitc_s", 75.756),
    ("vitc_b", "standard_vitc_b_patch1_14-4d374b0220.pth", "vitc_b", 76.790),
    ("vitc_l", "standard_vitc_l_patch1_14-560e48f246.pth", "vitc_l", 77.866),
]
# the long-schedule releases are evaluated at shorter side 232 by the bcos package (as its ConvNeXts, whose
# architectures carry resize=232 themselves)
_LONG_SPEC = InputSpec(size=(224, 224), resize=232)
_seen_arch: set[str] = set()
for _name, _file, _arch, _acc in _OFFICIAL:
    _add(
        WeightsEntry(
            input_spec=_LONG_SPEC if _name.endswith("_long") else None,
            name=_name,
            arch=_arch,
            classes="imagenet",
            url=f"{OFFICIAL_BASE_URL}/{_file}",
            fmt="bcos",
            accuracy=_acc,
            dataset="ImageNet",
            paper=PAPER_BCOS_V2,
            default=_arch not in _seen_arch,
            official=True,
        )
    )
    _seen_arch.add(_arch)
del _name, _file, _arch, _acc, _args, _seen_arch


def official_table() -> str:
    """The official entries as JSON lines (for docs and ``alignnet models --pretrained --json``)."""
    return "\n".join(json.dumps(describe(e)) for e in _ENTRIES.values() if e.official)
