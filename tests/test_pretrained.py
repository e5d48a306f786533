"""Pretrained weights: registry, download from a local HTTP server (release-format checkpoints written
from ``bcos``-package models with random weights), verification, conversion, cache, errors.
No test reaches beyond 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import math
import threading
import warnings
from pathlib import Path

import pytest
import torch

import alignnet
from alignnet import pretrained as P

bcos_pretrained = pytest.importorskip("bcos.models.pretrained")
BIAS = -math.log(999)  # the package's ImageNet logit bias, whatever the number of classes


class _Server:
    """Serves files from a folder on 127.0.0.1; ``truncate`` cuts bodies short; records requested paths."""

    def __init__(self, root: Path) -> None:
        self.root, self.truncate, self.requests = root, False, []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                owner.requests.append(self.path)
                path = owner.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if owner.truncate else data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A checkpoint in the exact release format: the state dict of the package's ResNet-18 (7 classes),
    saved with torch.save and named ``<stem>-<first 10 hex of its sha256>.pth`` as the release files are."""
    root = tmp_path_factory.mktemp("server")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = bcos_pretrained.resnet18(pretrained=False, num_classes=7).eval()
    tmp = root / "tmp.pth"
    torch.save(theirs.state_dict(), tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    name = f"resnet_18-{digest[:10]}.pth"
    tmp.rename(root / name)
    server = _Server(root)
    yield theirs, root, name, digest, server
    server.close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh cache; the registry as it was afterwards (registering can change other entries' defaults)."""
    monkeypatch.setenv("ALIGNNET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ALIGNNET_WEIGHTS_MIRROR", raising=False)
    saved = dict(P._ENTRIES)
    yield tmp_path / "home"
    P._ENTRIES.clear()
    P._ENTRIES.update(saved)


def _register(name, url, **kw):
    kw.setdefault("arch_args", {"logit_bias": BIAS})
    return alignnet.register_weights(name, "bcos_resnet18", url=url, fmt="bcos", **kw)


def _kept(home: Path) -> list[Path]:
    """The files a failed call left in the cache (the lock files of ``locks/`` are empty and always safe)."""
    return [p for p in home.rglob("*") if p.is_file() and p.parent.name != "locks"]


def test_registry_lists_shipped_and_every_official_release():
    names = alignnet.list_pretrained()
    assert {"fmnist_bcos", "fmnist_coda"} <= set(names)
    official = [P.get_weights(n) for n in names if P.get_weights(n).official]
    their_urls = {u for group in bcos_pretrained.URLS.values() for u in group.values()}
    assert {e.url for e in official} == their_urls and len(official) == 34
    assert all(e.arch in alignnet.list_models() for e in official)  # every entry builds
    assert all(len(e.expected_hash) == 10 for e in official)  # hash prefix from the file name
    assert P.default_weights("bcos_resnet50").name == "bcos_resnet50"  # not the long schedule
    assert P.get_weights("bcos_resnet50_long").arch == "bcos_resnet50"
    assert len(P.imagenet_classes()) == 1000 and P.imagenet_classes()[0] == "tench"
    with pytest.raises(ValueError, match="did you mean bcos_resnet50"):
        alignnet.load_pretrained("bcos_resnet5O")


def test_shipped_weights_load_offline_with_classes_and_spec():
    m = alignnet.load_pretrained("fmnist_bcos")
    assert m.class_names[0] == "T-shirt/top" and m.input_spec.style == "fashion_mnist" and not m.training
    m2 = alignnet.create_model("bcos_cifar10_9l", pretrained="fmnist_bcos", width=0.25)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x))
    with pytest.raises(ValueError, match="do not fit"):
        alignnet.create_model("bcos_cifar10_9l", pretrained="fmnist_bcos", width=0.5)
    with pytest.raises(ValueError, match="are for 'coda_cifar10_9l'"):
        alignnet.create_model("bcos_cifar10_9l", pretrained="fmnist_coda")


def test_download_convert_cache_then_offline(release, home, monkeypatch):
    theirs, _root, name, _digest, server = release
    _register("test_r18", f"{server.url}/{name}", class_names=[f"c{i}" for i in range(7)])
    before = len(server.requests)
    model = alignnet.load_pretrained("test_r18", progress=False)
    assert server.requests[before:] == [f"/{name}"]
    assert model.class_names == tuple(f"c{i}" for i in range(7)) and model.weights_name == "test_r18"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(torch.cat([x, 1 - x], 1)), rtol=1e-5, atol=1e-5)
    cached = P.weights_file("test_r18")
    assert cached.parent == home / "weights" and cached.name.startswith("test_r18-")
    # converted kept with the full digest of the file (sha256.json); download and temporary files removed
    assert set(_kept(home)) == {cached, home / "sha256.json"}
    # a second call reads the cache only: works with no network
    monkeypatch.setattr(P.urllib.request, "urlopen", lambda *a, **k: pytest.fail("the network was used"))
    again = alignnet.load_pretrained("test_r18", progress=False)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x))
    assert len(server.requests) == before + 1


def test_full_sha256_and_file_urls(release, home):
    theirs, root, name, digest, _server = release
    url = (root / name).as_uri()  # file://
    _register("test_file", url.replace(f"-{digest[:10]}", "-0000000000"), sha256=digest)
    with pytest.raises(alignnet.pretrained.WeightsDownloadError, match="put the file at"):
        alignnet.load_pretrained("test_file", progress=False)  # that file name does not exist
    P._ENTRIES.pop("test_file")
    _register("test_file", url, sha256=digest)
    model = alignnet.create_model("bcos_resnet18", pretrained="test_file")
    assert model.model_args["num_classes"] == 7


def test_hash_mismatch_keeps_nothing(release, home):
    _theirs, root, name, _digest, server = release
    _register("test_bad", f"{server.url}/{name}", sha256="0" * 64)
    with pytest.raises(ValueError, match=r"sha256 mismatch.*expected 0{64}.*got [0-9a-f]{64}"):
        alignnet.load_pretrained("test_bad", progress=False)
    assert _kept(home) == []


def test_truncated_download_keeps_nothing(release, home):
    _theirs, _root, name, _digest, server = release
    _register("test_cut", f"{server.url}/{name}")
    server.truncate = True
    try:
        with pytest.raises(alignnet.pretrained.WeightsDownloadError, match="stopped after|IncompleteRead"):
            alignnet.load_pretrained("test_cut", progress=False)
    finally:
        server.truncate = False
    assert _kept(home) == []


def test_offline_error_says_where_to_put_the_file_and_manual_placement_works(release, home):
    theirs, root, name, digest, _server = release
    entry = _register("test_off", f"http://127.0.0.1:9/{name}")  # nothing listens on port 9
    with pytest.raises(alignnet.pretrained.WeightsDownloadError) as info:
        alignnet.load_pretrained("test_off", progress=False)
    target = home / "downloads" / name
    assert str(target) in str(info.value) and entry.url in str(info.value)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((root / name).read_bytes())  # what the message tells the user to do
    model = alignnet.load_pretrained("test_off", progress=False)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(torch.cat([x, 1 - x], 1)), rtol=1e-5, atol=1e-5)


def test_mirror_replaces_the_official_base_url(release, home, monkeypatch):
    _theirs, _root, _name, _digest, server = release
    monkeypatch.setenv("ALIGNNET_WEIGHTS_MIRROR", server.url + "/")
    entry = P.get_weights("bcos_resnet18")
    assert entry.resolved_url == f"{server.url}/resnet_18-68b4160fff.pth"
    with pytest.raises(alignnet.pretrained.WeightsDownloadError, match="404"):
        alignnet.load_pretrained("bcos_resnet18", progress=False)  # our server lacks that file
    assert server.requests[-1] == "/resnet_18-68b4160fff.pth"
    assert _kept(home) == []


def test_register_weights_checks_its_input(home, tmp_path):
    with pytest.raises(ValueError, match="needs sha256"):
        alignnet.register_weights("test_x", "bcos_resnet18", url="https://example.org/w.pth")
    with pytest.raises(ValueError, match="64 hex"):
        alignnet.register_weights("test_x", "bcos_resnet18", url="https://example.org/w.pth", sha256="abc")
    with pytest.raises(ValueError, match="unknown architecture"):
        alignnet.register_weights("test_x", "bcos_resnet81", url="https://example.org/w.pth", sha256="0" * 64)
    with pytest.raises(ValueError, match="already registered"):
        alignnet.register_weights("fmnist_bcos", "bcos_resnet18", file=tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="http"):
        alignnet.register_weights("test_x", "bcos_resnet18", url="ftp://example.org/w.pth", sha256="0" * 64)


def test_pickled_code_is_never_run(home, tmp_path):
    """A .pth that is not weights-only (a pickled object) is refused by torch.load(weights_only=True)."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil-0.pth"
    path.write_bytes(pickle.dumps({"conv1.linear.weight": Evil()}))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _register("test_evil", path.as_uri(), sha256=digest)
    with pytest.raises(ValueError, match="not a loadable state dict"):
        alignnet.load_pretrained("test_evil", progress=False)


def test_saved_models_keep_class_names_and_input_spec(tmp_path):
    m = alignnet.load_pretrained("fmnist_coda")
    path = alignnet.save_model(m, tmp_path / "m.safetensors")
    back = alignnet.load_model(path)
    assert back.class_names == m.class_names and back.input_spec == m.input_spec


def test_resolve_model_order_and_errors(tmp_path):
    from alignnet.models import resolve_model

    assert resolve_model("fmnist_bcos").weights_name == "fmnist_bcos"
    with pytest.warns(RuntimeWarning, match="random"):
        assert resolve_model("bcos_cifar10_9l").untrained
    path = alignnet.save_model(alignnet.create_model("bcos_cifar10_9l", width=0.0625), tmp_path / "a.safetensors")
    assert resolve_model(str(path)).source == f"file {path}"
    with pytest.raises(FileNotFoundError):
        resolve_model(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="pickled checkpoints"):
        resolve_model(str(tmp_path / "x.pth"))
    with pytest.raises(ValueError, match="did you mean fmnist_bcos"):
        resolve_model("fmnist_bcoss")


# -- the registry's mechanisms: defaults, architecture checks, cache keys, concurrency, bad files ----------------


def _small_state_dict(path: Path, seed: int) -> torch.nn.Module:
    """A tiny ``bcos_cifar10_9l`` (width 1/16) with random weights; its state dict saved at ``path``."""
    torch.manual_seed(seed)
    model = alignnet.create_model("bcos_cifar10_9l", width=0.0625).eval()
    torch.save(model.state_dict(), path)
    return model


def _register_small(name: str, path: Path, **kw) -> P.WeightsEntry:
    kw.setdefault("arch_args", {"width": 0.0625})
    return alignnet.register_weights(name, "bcos_cifar10_9l", file=path, class_names="fashion_mnist", **kw)


def test_register_default_true_becomes_the_architectures_default(release, home, monkeypatch):
    theirs, root, name, _digest, _server = release
    monkeypatch.setenv("ALIGNNET_WEIGHTS_MIRROR", "http://127.0.0.1:9")  # the official file is never fetched
    _register("test_mine", (root / name).as_uri(), default=True)
    assert P.default_weights("bcos_resnet18").name == "test_mine"
    assert [e.name for e in P._ENTRIES.values() if e.arch == "bcos_resnet18" and e.default] == ["test_mine"]
    model = alignnet.create_model("bcos_resnet18", pretrained=True)
    assert model.weights_name == "test_mine" and model.model_args["num_classes"] == 7
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(torch.cat([x, 1 - x], 1)), rtol=1e-5, atol=1e-5)
    # the other architectures keep their defaults
    assert P.default_weights("bcos_resnet50").name == "bcos_resnet50"


def test_safetensors_entry_of_another_architecture_is_refused(home):
    shipped = P._shipped_path("fmnist_bcos.safetensors")
    alignnet.register_weights("test_wrong", "bcos_resnet50", file=shipped)
    with pytest.raises(ValueError, match=r"'bcos_resnet50'.*'bcos_cifar10_9l'"):
        alignnet.load_pretrained("test_wrong")
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    alignnet.register_weights("test_wrong_url", "bcos_resnet50", url=shipped.as_uri(), sha256=digest)
    with pytest.raises(ValueError, match=r"'bcos_resnet50'.*'bcos_cifar10_9l'"):
        alignnet.load_pretrained("test_wrong_url", progress=False)
    assert [p.parent.name for p in _kept(home)] == ["downloads"]  # verified, kept for a corrected entry
    alignnet.register_weights("test_wrong_args", "bcos_cifar10_9l", file=shipped, arch_args={"width": 0.5})
    with pytest.raises(ValueError, match=r"width.*0\.5.*0\.25"):
        alignnet.load_pretrained("test_wrong_args")
    alignnet.register_weights(
        "test_right", "bcos_cifar10_9l", file=shipped, arch_args={"width": 0.25}, class_names="fashion_mnist"
    )
    assert alignnet.load_pretrained("test_right").model_args == {"b": 2.0, "num_classes": 10, "width": 0.25}


def test_local_file_edits_and_reregistration_reach_the_model(home, tmp_path):
    x = torch.rand(2, 3, 32, 32)
    a = _small_state_dict(tmp_path / "a.pth", seed=0)
    b = _small_state_dict(tmp_path / "b.pth", seed=1)
    _register_small("test_local", tmp_path / "a.pth")
    with torch.no_grad():
        torch.testing.assert_close(alignnet.load_pretrained("test_local")(x), a(x))
        _register_small("test_local", tmp_path / "b.pth", overwrite=True)  # another file, same name
        torch.testing.assert_close(alignnet.load_pretrained("test_local")(x), b(x))
        c = _small_state_dict(tmp_path / "b.pth", seed=2)  # the file edited in place
        torch.testing.assert_close(alignnet.load_pretrained("test_local")(x), c(x))
        assert (c(x) - b(x)).abs().max() > 1e-3  # the three networks differ


_CONCURRENT_LOADER = r"""
import hashlib, json, os, sys, time
from pathlib import Path

import torch

torch.set_num_threads(1)
_load = torch.load
# a loader preempted between verifying a file and reading it (a busy machine): the protocol must not care
torch.load = lambda *args, **kwargs: time.sleep(0.4) or _load(*args, **kwargs)
import alignnet

url, base, index, count, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
alignnet.register_weights("test_conc", "bcos_resnet18", url=url, fmt="bcos", arch_args={"logit_bias": -6.9})
results = []
for r in range(rounds):
    os.environ["ALIGNNET_HOME"] = str(base / f"home{r}")
    (base / f"ready-{r}-{index}").touch()
    while len(list(base.glob(f"ready-{r}-*"))) < count:  # a barrier: every loader starts the round together
        time.sleep(0.005)
    time.sleep(index * (0.2 + 0.1 * r))  # staggered: later loaders find the first one downloading or converting
    try:
        state = alignnet.load_pretrained("test_conc", progress=False).state_dict()
        results.append(hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest())
    except Exception as exc:
        results.append(f"{type(exc).__name__}: {exc}")
print(json.dumps(results))
"""


@pytest.mark.slow  # ~20 s: four processes each import torch
def test_concurrent_loaders_of_one_entry_all_succeed_with_equal_weights(release, home, tmp_path):
    """Four processes load one entry at once, four times over (a fresh cache each round, staggered starts);
    before the lock, loaders deleted the download while another was about to read it."""
    import json
    import subprocess
    import sys

    _theirs, _root, name, _digest, server = release
    count, rounds = 4, 4
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CONCURRENT_LOADER,
                f"{server.url}/{name}",
                str(tmp_path),
                str(i),
                str(count),
                str(rounds),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * count, [err[-2000:] for _out, err in outputs]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _err in outputs]
    _register("test_conc", f"{server.url}/{name}", arch_args={"logit_bias": -6.9})
    state = alignnet.load_pretrained("test_conc", progress=False).state_dict()
    expected = hashlib.sha256(b"".join(v.numpy().tobytes() for v in state.values())).hexdigest()
    assert results == [[expected] * rounds] * count

    def left(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in _kept(root))

    assert [Path(p).parent.name for p in left(home)] == ["", "weights"]  # sha256.json and the conversion
    for r in range(rounds):  # each round the same: one conversion, no download or temporary file left
        assert left(tmp_path / f"home{r}") == left(home)


def test_a_bad_file_in_downloads_is_deleted_and_downloaded_again(release, home, tmp_path):
    theirs, _root, name, _digest, server = release
    target = home / "downloads" / name
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the release file")
    _register("test_badfile", f"http://127.0.0.1:9/{name}")  # offline: the bad file goes, the error says so
    with pytest.raises(alignnet.pretrained.WeightsDownloadError) as info:
        alignnet.load_pretrained("test_badfile", progress=False)
    message = str(info.value)
    assert not target.exists() and f"{target} failed its sha256 check" in message and "was deleted" in message
    target.write_bytes(b"not the release file")
    _register("test_badfile", f"{server.url}/{name}", overwrite=True)  # online: deleted and fetched once
    before = len(server.requests)
    model = alignnet.load_pretrained("test_badfile", progress=False)
    assert server.requests[before:] == [f"/{name}"]
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(torch.cat([x, 1 - x], 1)), rtol=1e-5, atol=1e-5)
    # a file of the user's own (file=) is never deleted, and the message says so
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"my weights")
    alignnet.register_weights("test_mine_bad", "bcos_resnet18", file=mine, sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256 mismatch") as info:
        alignnet.load_pretrained("test_mine_bad")
    assert mine.read_bytes() == b"my weights" and str(mine) in str(info.value) and "not kept" not in str(info.value)


def test_failed_downloads_leak_no_file_descriptors(release, home):
    fds = Path("/proc/self/fd")
    if not fds.is_dir():
        pytest.skip("needs /proc/self/fd")
    _theirs, _root, name, _digest, server = release
    _register("test_fd", f"http://127.0.0.1:9/{name}")  # connection refused
    _register("test_fd_missing", f"file:///nonexistent/{name}")  # no such file
    before = len(list(fds.iterdir()))
    for i in range(20):
        with pytest.raises(alignnet.pretrained.WeightsDownloadError):
            alignnet.load_pretrained("test_fd" if i % 2 else "test_fd_missing", progress=False)
    assert len(list(fds.iterdir())) == before
    assert _kept(home) == []


def test_one_answer_to_is_it_cached_for_describe_is_cached_and_the_cli(release, home, tmp_path, capsys):
    from alignnet.cli import main

    _theirs, _root, name, _digest, server = release
    _small_state_dict(tmp_path / "mine.pth", seed=0)
    local = _register_small("test_a_local", tmp_path / "mine.pth")
    remote = _register("test_b_remote", f"{server.url}/{name}")

    def cli_rows() -> dict[str, str]:
        assert main(["models", "--pretrained", "--pattern", "test_*"]) == 0
        lines = capsys.readouterr().out.splitlines()
        return {line.split()[0]: line.split()[-1] for line in lines[1:] if line.startswith("test_")}

    assert P.describe(P.get_weights("fmnist_bcos"))["source"] == "shipped"
    assert P.availability("fmnist_bcos") == "shipped" and P.is_cached("fmnist_bcos")
    assert P.describe(local)["source"] == str(tmp_path / "mine.pth") and P.describe(local)["status"] == "local file"
    assert P.describe(remote)["source"] == f"{server.url}/{name}" and P.describe(remote)["status"] == "download"
    assert not P.is_cached("test_b_remote") and P.is_cached("test_a_local")
    assert cli_rows() == {"test_a_local": "file", "test_b_remote": "download"}
    assert not home.exists()  # asking never creates the cache
    alignnet.load_pretrained("test_b_remote", progress=False)
    assert P.availability("test_b_remote") == "cached" and P.is_cached("test_b_remote")
    assert P.describe(remote)["status"] == "cached"
    assert cli_rows() == {"test_a_local": "file", "test_b_remote": "cached"}


def test_full_digest_is_recorded_on_first_verification_and_checked_later(release, home):
    import json

    _theirs, root, name, digest, server = release
    _register("test_tofu", f"{server.url}/{name}")  # verified against the 10 hex digits in the file name
    alignnet.load_pretrained("test_tofu", progress=False)
    record = home / "sha256.json"
    assert json.loads(record.read_text()) == {name: digest}
    # a later file of that name whose digest starts the same but differs from the recorded one is refused
    # (simulated by editing the record: a real 40-bit prefix collision is out of reach of a test)
    other = digest[:10] + ("0" if digest[10] != "0" else "1") + digest[11:]
    record.write_text(json.dumps({name: other}))
    for converted in (home / "weights").glob("*.safetensors"):
        converted.unlink()
    with pytest.raises(ValueError, match=f"recorded.*{other}.*{record}"):
        alignnet.load_pretrained("test_tofu", progress=False)
    assert [p.name for p in _kept(home)] == ["sha256.json"]
    (home / "downloads" / name).write_bytes((root / name).read_bytes())  # a file put by hand: checked the same
    with pytest.raises(ValueError, match=f"recorded.*{other}"):
        alignnet.load_pretrained("test_tofu", progress=False)
    assert not (home / "downloads" / name).exists()


def test_converted_cache_key_covers_every_input(release, home, tmp_path, monkeypatch):
    import shutil

    _theirs, root, name, digest, _server = release
    conversions = []
    convert = P._convert
    monkeypatch.setattr(P, "_convert", lambda entry, raw: conversions.append(entry.name) or convert(entry, raw))

    def load(**kw):
        kw.setdefault("url", (root / name).as_uri())
        kw.setdefault("arch_args", {"logit_bias": BIAS})
        arch = kw.pop("arch", "bcos_resnet18")
        alignnet.register_weights("test_key", arch, fmt=kw.pop("fmt", "bcos"), overwrite=True, **kw)
        return alignnet.load_pretrained("test_key", progress=False), P.weights_file("test_key")

    model, path = load()
    assert load()[1] == path and len(conversions) == 1  # same inputs: the cache
    (tmp_path / "mirror").mkdir()
    shutil.copy(root / name, tmp_path / "mirror" / name)
    paths = {path}
    for change in (
        {"url": (tmp_path / "mirror" / name).as_uri()},
        {"sha256": digest},
        {"arch_args": {"logit_bias": 0.0}},
    ):
        before = len(conversions)
        model, path = load(**change)
        assert len(conversions) == before + 1 and path not in paths, change
        paths.add(path)
    assert model.model_args["logit_bias"] == 0.0
    for change in ({"arch": "bcos_resnet34"}, {"fmt": "state_dict"}):  # the release file fits neither
        before = len(conversions)
        with pytest.raises(ValueError):
            load(**change)
        assert len(conversions) == before + 1, change
    # a local file: its content is an input
    _small_state_dict(tmp_path / "a.pth", seed=0)
    _register_small("test_key_file", tmp_path / "a.pth")
    first = P.weights_file("test_key_file")
    assert P.weights_file("test_key_file") == first
    before = len(conversions)
    _small_state_dict(tmp_path / "a.pth", seed=1)
    assert P.weights_file("test_key_file") != first and len(conversions) == before + 1
