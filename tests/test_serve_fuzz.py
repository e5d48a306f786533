"""Load and fuzz the REAL web server: uvicorn in a subprocess, hostile uploads from concurrent clients.

Over a thousand malformed uploads (truncated and mutated PNG/JPEG/GIF/WebP/BMP/TIFF bytes, forged
headers, extreme sizes and aspect ratios, decompression bombs, non-images, empty bodies, wrong content
types, bad parameters) interleaved with valid ones, from 16 threads at once. Every answer must be 200 or
4xx (never 5xx, never a dropped connection), the valid ones must equal the answers of the quiet server,
the server must be alive afterwards and its peak RSS (``VmHWM``) under 2 GB.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.slow

CLIENTS = 16
MALFORMED = 1000
VALID = 200
MAX_RSS_BYTES = 2 * 1024**3

# as `alignnet serve` (cli/serve.py): one torch thread per request, min(4, CPUs) copies of the model,
# uvicorn with the warning log level; the socket is bound to an ephemeral port here and its number printed
SERVER = textwrap.dedent(
    """
    import socket, sys
    import torch, uvicorn
    from alignnet.serve.app import create_app
    from alignnet.serve.backend import build_models, default_replicas

    torch.set_num_threads(1)
    app = create_app(build_models(["fmnist_bcos"], replicas=default_replicas(), progress=False), methods=["grad"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    """
)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.cache
def _png_1bit(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, written row by row (a decompression bomb when large)."""
    z = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _png_resized_header(png: bytes, width: int, height: int) -> bytes:
    """``png`` with its IHDR claiming another size (the CRC fixed, so only the size lies)."""
    ihdr = png[16:29]
    return png[:8] + _chunk(b"IHDR", struct.pack(">II", width, height) + ihdr[8:]) + png[33:]


def _jpeg_resized_header(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0) claiming another size."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


def _gif_resized_header(gif: bytes, width: int, height: int) -> bytes:
    """``gif`` with its logical screen claiming another size."""
    return gif[:6] + struct.pack("<HH", width, height) + gif[10:]


def _encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _valid_images(rng: np.random.Generator) -> list[bytes]:
    """Fashion-MNIST items as PNG (as uploaded from the page) and photo-like images in every format."""
    from alignnet.data import load_embedded

    raw = load_embedded("test").images
    out = [_encode(raw[i], "PNG") for i in (0, 7, 11, 42)]
    out.append(_encode(np.repeat(255 - raw[5][..., None], 3, -1), "JPEG", quality=90))  # dark on white, RGB
    grad = np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None].repeat(480, 0).repeat(3, 2)
    noise = rng.integers(0, 256, (90, 60, 4), dtype=np.uint8)
    out += [
        _encode(grad, "JPEG"),
        _encode(noise, "PNG"),  # RGBA
        _encode(noise[..., :3], "WEBP"),
        _encode(noise[..., 0], "GIF"),
        _encode(noise[..., :3], "BMP"),
        _encode(noise[..., :3], "TIFF"),
        _png_1bit(2000, 20),  # 100:1, exactly the aspect-ratio limit
    ]
    return out


def _malformed(rng: random.Random, bases: list[bytes], n: int) -> list[tuple[str, bytes, dict]]:
    """``n`` hostile uploads as ``(kind, body, headers)``."""
    png, jpeg, gif = bases[0], bases[5], bases[8]
    fixed: list[tuple[str, bytes]] = [
        ("strip-200000x2", _png_1bit(200_000, 2)),
        ("strip-2x200000", _png_1bit(2, 200_000)),
        ("strip-101:1", _png_1bit(2020, 20)),
        ("pixels-48MP", _png_1bit(8000, 6000)),
        ("bomb-200MP", _png_1bit(20_000, 10_000)),
        ("bomb-95MP-warning-band", _png_1bit(10_000, 9_500)),
        ("empty", b""),
        ("text", b"#!/bin/sh\nrm -rf /\n"),
        ("pdf", b"%PDF-1.4\n" + b"x" * 1000),
        ("html", b"<html><body>hello</body></html>"),
        ("json", b'{"image": "not really"}'),
        ("zip", b"PK\x03\x04" + bytes(200)),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="99999" height="99999"/>'),
        ("magic-only-png", png[:8]),
        ("magic-only-jpeg", jpeg[:2]),
    ]
    # decoded at full size, under the 40 MP limit: memory-heavy, bounded by the server's pixel budget
    heavy = [("large-36MP", _png_1bit(6000, 6000)), ("large-40MP-at-limit", _png_1bit(40_000, 1000))]
    out: list[tuple[str, bytes, dict]] = [(k, b, {}) for k, b in fixed + heavy + heavy[:1]]
    sizes = [(0, 0), (1, 0), (0, 1), (65535, 65535), (2**31 - 1, 1), (1, 2**31 - 1), (100_000, 100_000), (7000, 6000)]
    while len(out) < n:
        r = rng.random()
        base = rng.choice(bases)
        if r < 0.25:
            kind, body = "truncated", base[: rng.randrange(0, len(base))]
        elif r < 0.55:
            body = bytearray(base)
            for _ in range(rng.randint(1, 12)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            kind, body = "mutated", bytes(body)
        elif r < 0.65:
            body = bytearray(base)
            start = rng.randrange(len(body))
            body[start : start + rng.randint(1, 64)] = rng.randbytes(rng.randint(0, 64))
            kind, body = "spliced", bytes(body)
        elif r < 0.75:
            w, h = rng.choice(sizes + [(rng.randint(1, 70_000), rng.randint(1, 70_000))])
            forge = rng.choice(
                [
                    ("png", _png_resized_header, png),
                    ("jpeg", _jpeg_resized_header, jpeg),
                    ("gif", _gif_resized_header, gif),
                ]
            )
            kind, body = (
                f"forged-{forge[0]}-header",
                forge[1](
                    forge[2], min(w, 65535) if forge[0] != "png" else w, min(h, 65535) if forge[0] != "png" else h
                ),
            )
        elif r < 0.82:
            kind, body = "random-bytes", rng.randbytes(rng.randint(1, 4096))
        elif r < 0.87:
            kind, body = "magic+garbage", base[:16] + rng.randbytes(rng.randint(0, 2048))
        elif r < 0.92:
            w, h = rng.choice([(1, 1), (1, 101), (101, 1), (3, 40_000), (70_000, 3), (300_000, 1)])
            kind, body = "extreme-shape", _png_1bit(w, h)
        else:
            boundary = "fuzzboundary"
            form = (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
                    "Content-Type: image/png\r\n\r\n"
                ).encode()
                + png
                + f"\r\n--{boundary}--\r\n".encode()
            )
            out.append(("multipart-form", form, {"content-type": f"multipart/form-data; boundary={boundary}"}))
            continue
        headers = rng.choice(
            [{}, {"content-type": "image/png"}, {"content-type": "text/plain"}, {"content-type": "application/json"}]
        )
        out.append((kind, body, headers))
    return out[:n]


BAD_PARAMS = [
    "/api/explain?model=nope",
    "/api/explain?target=abc",
    "/api/explain?target=99",
    "/api/explain?target=-1",
    "/api/explain?example=-1",
    "/api/explain?example=99999999999999999999",
    "/api/attribute?methods=",
    "/api/attribute?methods=lime",
    "/api/attribute?methods=grad,grad,grad,grad,grad",
]


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _free_port_server(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, stderr=log.open("wb"), text=True, cwd=tmp_path
    )
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise AssertionError(f"the server did not start: {line!r}\n{log.read_text()[-3000:]}")
    return proc, int(line), log


def _answer(r) -> tuple:
    e = r.json()
    return e["predicted"], e["target"], [(c["index"], c["logit"], c["probability"]) for c in e["top"]], e["logit"]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_real_server_survives_hostile_uploads_under_load(tmp_path):
    rng = random.Random(21)
    bases = _valid_images(np.random.default_rng(21))
    malformed = _malformed(rng, bases, MALFORMED)
    valid = [("valid", "/api/explain", i) for i in range(len(bases))]
    jobs: list[tuple] = [("valid", "/api/explain", i % len(bases)) for i in range(VALID)]
    jobs += [("valid-wrong-content-type", "/api/explain", i) for i in range(len(bases))]
    jobs += [("valid-attribute", "/api/attribute?methods=grad", i) for i in range(len(bases))]
    jobs += [("example", "/api/explain?example=7", None)] * 10
    jobs += [
        (kind, rng.choice(["/api/explain", "/api/attribute?methods=grad"]), (body, headers))
        for kind, body, headers in malformed
    ]
    jobs += [("bad-params", url, (bases[0], {})) for url in BAD_PARAMS for _ in range(3)]
    rng.shuffle(jobs)
    assert sum(1 for j in jobs if not j[0].startswith(("valid", "example"))) >= 1000

    proc, port, log = _free_port_server(tmp_path)
    base_url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base_url, timeout=120) as quiet:
            for _ in range(100):
                try:
                    if quiet.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            reference = {}
            for _, route, i in valid:  # the quiet server's answers
                r = quiet.post(route, content=bases[i], headers={"content-type": "application/octet-stream"})
                assert r.status_code == 200, r.text
                reference[i] = _answer(r)
            reference["example"] = _answer(quiet.post("/api/explain?example=7"))
            rss_quiet = _peak_rss(proc.pid)

        results: list[tuple[str, int | str, float, object]] = []
        lock = threading.Lock()
        queue = list(enumerate(jobs))

        def client() -> None:
            with httpx.Client(base_url=base_url, timeout=120) as c:
                while True:
                    with lock:
                        if not queue:
                            return
                        _, (kind, route, payload) = queue.pop()
                    if kind.startswith("valid"):
                        body = bases[payload]
                        headers = {"content-type": "text/plain"} if kind == "valid-wrong-content-type" else {}
                    elif kind == "example":
                        body, headers = b"", {}
                    else:
                        body, headers = payload
                    start = time.perf_counter()
                    try:
                        r = c.post(route, content=body, headers=headers)
                        status: int | str = r.status_code
                    except httpx.TransportError as exc:  # a dropped connection
                        r, status = None, f"{type(exc).__name__}: {exc}"
                    ms = (time.perf_counter() - start) * 1000
                    answer = None
                    if r is not None and status == 200 and kind in ("valid", "valid-wrong-content-type"):
                        answer = (payload, _answer(r))
                    elif r is not None and status == 200 and kind == "example":
                        answer = ("example", _answer(r))
                    elif r is not None and status != 200:
                        try:
                            says_why = isinstance(r.json()["detail"], (str, list)) and bool(r.json()["detail"])
                        except (ValueError, KeyError, TypeError):
                            says_why = False
                        if not says_why:  # every refusal is JSON saying why
                            status = f"{status} without a JSON detail: {r.text[:200]!r}"
                    with lock:
                        results.append((kind, status, ms, answer))

        start = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start

        # alive afterwards, and still answering correctly
        assert proc.poll() is None, log.read_text()[-3000:]
        with httpx.Client(base_url=base_url, timeout=60) as after:
            assert after.get("/api/health").json() == {"status": "ok"}
            assert _answer(after.post("/api/explain", content=bases[0])) == reference[0]
        peak = _peak_rss(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    by_status = Counter(status for _, status, _, _ in results)
    by_kind_status = Counter((kind, status) for kind, status, _, _ in results)
    latencies = np.array([ms for _, _, ms, _ in results])
    valid_ms = np.array([ms for kind, _, ms, _ in results if kind.startswith("valid")])
    print(
        f"\n{len(results)} requests from {CLIENTS} clients in {seconds:.1f} s; per status: {dict(sorted(by_status.items(), key=str))}"
        f"\nper kind and status: {dict(sorted(by_kind_status.items(), key=str))}"
        f"\nlatency all: p50 {np.percentile(latencies, 50):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms, max {latencies.max():.0f} ms"
        f"; valid: p50 {np.percentile(valid_ms, 50):.0f} ms, p95 {np.percentile(valid_ms, 95):.0f} ms"
        f"\nserver peak RSS {peak / 2**20:.0f} MiB (after the quiet requests: {rss_quiet / 2**20:.0f} MiB)"
    )
    assert len(results) == len(jobs)
    bad = {s: n for s, n in by_status.items() if not (isinstance(s, int) and (s == 200 or 400 <= s < 500))}
    assert not bad, f"5xx or dropped connections: {bad}; {[r[:2] for r in results if r[1] in bad][:20]}"
    # the valid ones all answered, exactly as on the quiet server
    for kind in ("valid", "valid-wrong-content-type", "valid-attribute", "example"):
        assert by_kind_status[(kind, 200)] == sum(1 for j in jobs if j[0] == kind), kind
    answers = [a for _, _, _, a in results if a is not None]
    assert len(answers) == VALID + len(bases) + 10
    for key, answer in answers:
        assert answer == reference[key], key
    # the hostile shapes were refused with the right status
    for kind in (
        "strip-200000x2",
        "strip-2x200000",
        "strip-101:1",
        "pixels-48MP",
        "bomb-200MP",
        "bomb-95MP-warning-band",
    ):
        assert by_kind_status[(kind, 413)] == 1, kind
    assert by_kind_status[("empty", 400)] == 1
    assert by_kind_status[("large-36MP", 200)] == 2 and by_kind_status[("large-40MP-at-limit", 200)] == 1
    assert by_kind_status[("random-bytes", 415)] == sum(1 for k, *_ in malformed if k == "random-bytes")
    assert peak < MAX_RSS_BYTES, f"peak RSS {peak / 2**20:.0f} MiB"
