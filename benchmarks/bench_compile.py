"""torch.compile against eager: forward (inference) and ``alignnet.explain`` (benchmarks/RESULTS.md "torch.compile").

For each model: the compile time (the first compiled call, for inference and for the explanation, which
compiles its own graphs: explanation mode is a different program), cold (an empty inductor cache: a new
temporary ``TORCHINDUCTOR_CACHE_DIR`` per run) and cached (after ``torch._dynamo.reset()``, as in a second
process: inductor's on-disk caches hit); then ``--rounds`` rounds that each time eager and compiled back to
back (``--reps`` calls each, the order alternating between rounds), and the median of the per-round ratios
eager / compiled (> 1: compiling is faster). Random weights. Exactness: the explanation weights of eager and
compiled float32 against a float64 eager explanation of the same targets (max relative difference).

    python benchmarks/bench_compile.py [--models bcos_cifar10_9l:8x32,coda_cifar10_9l:8x32,bcos_resnet18:1x224]
                                       [--threads 1] [--rounds 5] [--reps 3] [--backend inductor]

A model is ``NAME:BATCHxSIZE`` with optional create_model arguments after a second colon
(``bcos_cifar10_9l:8x32:width=0.25``).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import tempfile
import time

import torch
import torch._dynamo

import alignnet


def _parse(spec: str) -> tuple[str, int, int, dict]:
    name, shape, *rest = spec.split(":")
    batch, side = (int(v) for v in shape.split("x"))
    kwargs = {}
    for item in rest[0].split(",") if rest else ():
        key, value = item.split("=")
        kwargs[key] = float(value) if "." in value else int(value)
    return name, batch, side, kwargs


def _seconds(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _row(spec: str, args: argparse.Namespace) -> str:
    """Measure one model; its table row."""
    name, batch, side, kwargs = _parse(spec)
    torch.manual_seed(0)
    model = alignnet.create_model(name, **kwargs).eval()
    x = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(1))

    def forward(m):
        with torch.no_grad():
            m(x)

    def first_calls() -> tuple:
        """A fresh compiled model: seconds of its first inference and first explanation, and the explanation."""
        torch._dynamo.reset()
        compiled = torch.compile(model, backend=args.backend)
        start = time.perf_counter()
        forward(compiled)
        middle = time.perf_counter()
        explanation = alignnet.explain(compiled, x)
        return compiled, middle - start, time.perf_counter() - middle, explanation

    _, cold_forward, cold_explain, _ = first_calls()
    compiled, cached_forward, cached_explain, got = first_calls()
    eager = alignnet.explain(model, x)
    reference = alignnet.explain(copy.deepcopy(model).double(), x.double(), eager.targets).weights

    def rel(w):
        return float((w.double() - reference).abs().max() / reference.abs().max())

    forward(model)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in ("ef", "cf", "ee", "ce")}
    for r in range(args.rounds):
        pairs = [("ef", model), ("cf", compiled)]
        for key, m in pairs if r % 2 == 0 else pairs[::-1]:
            times[key].append(_seconds(lambda m=m: forward(m), args.reps))
        pairs = [("ee", model), ("ce", compiled)]
        for key, m in pairs if r % 2 == 0 else pairs[::-1]:
            times[key].append(_seconds(lambda m=m: alignnet.explain(m, x), args.reps))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}

    def ratio(eager_key: str, compiled_key: str) -> str:
        """Median of the per-round ratios eager / compiled, with their range."""
        ratios = [e / c for e, c in zip(times[eager_key], times[compiled_key], strict=True)]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    label = name + (f" ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")
    return (
        f"| {label} | {batch} x {side}² | {cold_forward:.1f} / {cached_forward:.1f} "
        f"| {cold_explain:.1f} / {cached_explain:.1f} | {med['ef']:.1f} / {med['cf']:.1f} | {ratio('ef', 'cf')} "
        f"| {med['ee']:.1f} / {med['ce']:.1f} | {ratio('ee', 'ce')} "
        f"| {rel(eager.weights):.1e} / {rel(got.weights):.1e} | {got.completeness_error():.1e} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="bcos_cifar10_9l:8x32,coda_cifar10_9l:8x32,bcos_resnet18:1x224")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--backend", default="inductor")
    args = parser.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_compile_inductor_")
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s), "
        f"backend {args.backend}, load average {os.getloadavg()[0]:.1f} at the start"
    )
    print(
        "| model | batch x size | compile inference: cold / cached (s) | compile explain: cold / cached (s) "
        "| fwd eager / compiled (ms) | fwd ratio (range) | explain eager / compiled (ms) | explain ratio (range) "
        "| weights vs float64: eager / compiled | completeness: compiled |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.models.split(","):
        print(_row(spec, args), flush=True)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
