"""Load test of ``alignnet serve``: concurrent requests against the real server on localhost.

Starts ``alignnet serve`` (uvicorn) in a subprocess on a free port with the default models (the
shipped Fashion-MNIST B-cos and CoDA models, or their untrained stand-ins while the weights are
missing), then for each model:

1. sequential latency: ``--sequential`` single requests, one after another;
2. load: ``--concurrent`` requests sent at once (each uploads a different embedded test image as
   a 28x28 PNG), all checked against the model run in this process: status 200, same top class;
3. optionally (``--attribute``) the same load on ``/api/attribute`` with the page's default methods.

Prints a table and, with ``--write``, replaces the "Web explorer" section of benchmarks/RESULTS.md.

    python benchmarks/bench_serve.py --concurrent 20 --write
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from alignnet.data import load_embedded
from alignnet.serve.backend import DEFAULT_METHODS, build_models

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Web explorer (`benchmarks/bench_serve.py`)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _start_server(port: int, workers: int, torch_threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "alignnet", "serve", "--port", str(port)]
    cmd += ["--workers", str(workers), "--torch-threads", str(torch_threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer within 180 s")


async def _one(client: httpx.AsyncClient, url: str, body: bytes) -> tuple[float, httpx.Response]:
    start = time.perf_counter()
    r = await client.post(url, content=body, headers={"content-type": "image/png"})
    return (time.perf_counter() - start) * 1000, r


async def _load(base: str, route: str, model: str, bodies: list[bytes], extra: str = "") -> tuple[list, float]:
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=httpx.Limits(max_connections=100)) as client:
        start = time.perf_counter()
        out = await asyncio.gather(*(_one(client, f"{route}?model={model}{extra}", b) for b in bodies))
        return out, (time.perf_counter() - start) * 1000


def _check(responses: list, expected: list[int], route: str) -> int:
    ok = 0
    for (_, r), want in zip(responses, expected, strict=True):
        if r.status_code != 200:
            print(f"  {route}: status {r.status_code}: {r.text[:200]}")
            continue
        data = r.json()
        got = data["top"][0]["index"] if route == "/api/explain" else data["target"]
        good = got == want
        if route == "/api/attribute":
            good = good and all("map" in m for m in data["methods"])
        ok += good
    return ok


def _stats(latencies: list[float]) -> dict:
    return {"median": statistics.median(latencies), "worst": max(latencies), "best": min(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrent", type=int, default=20, help="requests sent at once (default 20)")
    parser.add_argument("--sequential", type=int, default=10, help="single requests for the baseline (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="server: copies of each model (default 2)")
    parser.add_argument("--torch-threads", type=int, default=1, help="server: torch threads per request (default 1)")
    parser.add_argument("--attribute", action="store_true", help="also load /api/attribute with the default methods")
    parser.add_argument("--write", action="store_true", help=f"write the table into {RESULTS}")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    data = load_embedded("test")
    inputs = data.tensors()[0]
    n = args.concurrent
    bodies = [_png(data.images[i]) for i in range(n)]
    models = build_models()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _start_server(port, args.workers, args.torch_threads)
    rows = []
    try:
        for served in models:
            with torch.no_grad():
                expected = served.model(inputs[:n]).argmax(1).tolist()
            route = "/api/explain"
            asyncio.run(_load(base, route, served.id, bodies[:2]))  # warm-up
            sequential = [
                asyncio.run(_load(base, route, served.id, [bodies[i % n]]))[1] for i in range(args.sequential)
            ]
            responses, wall = asyncio.run(_load(base, route, served.id, bodies))
            ok = _check(responses, expected, route)
            server_ms = [r.json()["explain_ms"] for _, r in responses if r.status_code == 200]
            rows.append(
                (served, route, "", ok, n, _stats([t for t, _ in responses]), wall, _stats(sequential), server_ms)
            )
            if args.attribute:
                route, methods = "/api/attribute", ",".join(DEFAULT_METHODS)
                extra = f"&methods={methods}"
                sequential = [asyncio.run(_load(base, route, served.id, [bodies[i % n]], extra))[1] for i in range(3)]
                responses, wall = asyncio.run(_load(base, route, served.id, bodies, extra))
                ok = _check(responses, expected, route)
                rows.append(
                    (served, route, methods, ok, n, _stats([t for t, _ in responses]), wall, _stats(sequential), [])
                )
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    lines = [
        SECTION,
        "",
        f"`python benchmarks/bench_serve.py --concurrent {n} --workers {args.workers} --torch-threads "
        f"{args.torch_threads}{' --attribute' if args.attribute else ''}`: real `alignnet serve` (uvicorn) in a "
        "subprocess on 127.0.0.1; the client (httpx, asyncio) sends the requests at once, each uploading a "
        "different embedded Fashion-MNIST test image as a 28x28 PNG, and checks every answer (status 200 and the "
        f"same top class as the model run in the client process). Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores (shared with other work at the time), torch {torch.__version__}; "
        f"1-minute load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run.",
        "Times are client-side wall times per request (upload, decode, explain, PNG encoding, JSON); "
        "the last column is the time of `alignnet.explain` itself inside the server.",
        "",
        "| model | route | correct | concurrent median (ms) | concurrent worst (ms) | all answered after (ms) "
        "| single request median (ms) | server explain time median (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for served, route, methods, ok, total, conc, wall, seq, server_ms in rows:
        name = served.id + ("" if served.trained else " (untrained stand-in)")
        label = route + (f" ({methods})" if methods else "")
        server = f"{statistics.median(server_ms):.1f}" if server_ms else "-"
        lines.append(
            f"| {name} | {label} | {ok}/{total} | {conc['median']:.0f} | {conc['worst']:.0f} | {wall:.0f} "
            f"| {seq['median']:.0f} | {server} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        _write_section(text)
        print(f"written to {RESULTS}")
    return 0 if all(r[3] == r[4] for r in rows) else 1


def _write_section(text: str) -> None:
    """Replace this benchmark's section of RESULTS.md (or append it), keeping the others."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark and experiment results\n"
    start = old.find(SECTION)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("" if end < 0 else "\n" + old[end + 1 :])
    RESULTS.write_text(new)


if __name__ == "__main__":
    sys.exit(main())
