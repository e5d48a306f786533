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
    monkeypatch.setenv("ALIGNNET_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ALIGNNET_WEIGHTS_MIRROR", raising=False)
    yield tmp_path / "home"
    for name in [n for n in P.list_pretrained("test_*")]:
        P._ENTRIES.pop(name)


def _register(name, url, **kw):
    kw.setdefault("arch_args", {"logit_bias": BIAS})
    return alignnet.register_weights(name, "bcos_resnet18", url=url, fmt="bcos", **kw)


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


def test_download_convert_cache_then_offline(release, home):
    theirs, _root, name, digest, server = release
    _register("test_r18", f"{server.url}/{name}", class_names=[f"c{i}" for i in range(7)])
    before = len(server.requests)
    model = alignnet.load_pretrained("test_r18", progress=False)
    assert server.requests[before:] == [f"/{name}"]
    assert model.class_names == tuple(f"c{i}" for i in range(7)) and model.weights_name == "test_r18"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), theirs(torch.cat([x, 1 - x], 1)), rtol=1e-5, atol=1e-5)
    cached = home / "weights" / f"test_r18-{digest[:10]}.safetensors"
    assert cached.is_file() and not list((home / "downloads").glob("*"))  # converted kept, download removed
    assert not list(home.rglob("*.part"))
    # a second call reads the cache only: works with the URL unreachable
    P._ENTRIES.pop("test_r18")
    _register("test_r18", "http://127.0.0.1:9/unreachable-" + digest[:10] + ".pth")
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
    assert not [p for p in home.rglob("*") if p.is_file()]


def test_truncated_download_keeps_nothing(release, home):
    _theirs, _root, name, _digest, server = release
    _register("test_cut", f"{server.url}/{name}")
    server.truncate = True
    try:
        with pytest.raises(alignnet.pretrained.WeightsDownloadError, match="stopped after|IncompleteRead"):
            alignnet.load_pretrained("test_cut", progress=False)
    finally:
        server.truncate = False
    assert not [p for p in home.rglob("*") if p.is_file()]


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
    assert not [p for p in home.rglob("*") if p.is_file()]


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
