"""B-cos on a CUDA GPU: forward, explain, torch.compile and bf16 autocast against torchvision, and throughput
against batch size (benchmarks/RESULTS.md "GPU", issue 23). Ready to run on a machine with a GPU; CI never
runs it (it exits with code 2 and a line when CUDA is missing).

For each model (B-cos and its torchvision counterpart, random weights, eval mode, 224x224) and each batch size:
images/s of the float32 forward (``torch.no_grad``), the bf16 autocast forward, the compiled forward
(``torch.compile``, inductor; compile time reported separately), ``alignnet.explain`` in float32 and under bf16
autocast, and the ratios B-cos / torchvision. Timing: CUDA events around ``--reps`` calls after ``--warmup``
calls, median of ``--rounds`` rounds, B-cos and torchvision alternating round by round. Exactness on the GPU:
the float32 and bf16 explanations' completeness error (``sum(contributions) + bias - logit``, relative to the
logit) and the largest relative difference of the float32 explanation weights from a float64 explanation.
Peak GPU memory of explain at the largest batch against a plain forward + backward.

    python benchmarks/bench_gpu.py [--models resnet18,resnet50,densenet121] [--batches 1,8,32,64,128]
                                   [--rounds 5] [--reps 10] [--no-compile] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

import alignnet


def _timed(fn, reps: int) -> float:
    """Seconds per call of ``fn`` on the current CUDA stream (CUDA events; the GPU's time, not the launch's)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def alternating(fns: dict, rounds: int, reps: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function; the order of the functions rotates between rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    torch.cuda.synchronize()
    names, times = list(fns), {k: [] for k in fns}
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            times[k].append(_timed(fns[k], reps))
    return {k: statistics.median(v) for k, v in times.items()}


def _forward(model, x, bf16: bool = False):
    def f():
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    return f


def _explain(model, x, bf16: bool = False):
    def f():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            alignnet.explain(model, x)

    return f


def _relative_completeness(e) -> float:
    return e.completeness_error()  # max |sum(contributions) + bias - logit| / max |logit|


def exactness(model, x) -> dict:
    e32 = alignnet.explain(model, x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        e16 = alignnet.explain(model, x)
    e64 = alignnet.explain(model.double(), x.double(), targets=e32.targets)
    model.float()
    diff = float((e32.weights.double() - e64.weights).abs().max() / e64.weights.abs().max())
    return {
        "completeness_f32": _relative_completeness(e32),
        "completeness_bf16": _relative_completeness(e16),
        "weights_f32_vs_f64": diff,
    }


def peak_memory_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def bench_model(name: str, batches: list[int], args) -> list[dict]:
    import torchvision

    torch.manual_seed(0)
    ours = alignnet.create_model(f"bcos_{name}").cuda().eval()
    tv = getattr(torchvision.models, name)().cuda().eval()
    rows = []
    compiled = {}
    if not args.no_compile:
        for label, model in (("bcos", ours), ("tv", tv)):
            c = torch.compile(model)
            x = torch.rand(batches[0], 3, 224, 224, device="cuda")
            t = time.perf_counter()
            with torch.no_grad():
                c(x)
            torch.cuda.synchronize()
            compiled[label] = (c, time.perf_counter() - t)
    for batch in batches:
        x = torch.rand(batch, 3, 224, 224, device="cuda")
        fns = {
            "bcos_fwd": _forward(ours, x),
            "tv_fwd": _forward(tv, x),
            "bcos_fwd_bf16": _forward(ours, x, bf16=True),
            "tv_fwd_bf16": _forward(tv, x, bf16=True),
            "bcos_explain": _explain(ours, x),
            "bcos_explain_bf16": _explain(ours, x, bf16=True),
        }
        if compiled:
            fns["bcos_fwd_compiled"] = _forward(compiled["bcos"][0], x)
            fns["tv_fwd_compiled"] = _forward(compiled["tv"][0], x)
        t = alternating(fns, args.rounds, args.reps, args.warmup)
        row = {"model": name, "batch": batch, **{f"{k}_img_s": batch / v for k, v in t.items()}}
        for mode in ("fwd", "fwd_bf16") + (("fwd_compiled",) if compiled else ()):
            row[f"ratio_{mode}"] = t[f"bcos_{mode}"] / t[f"tv_{mode}"]
        row["explain_over_fwd"] = t["bcos_explain"] / t["bcos_fwd"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    x = torch.rand(batches[-1], 3, 224, 224, device="cuda")

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        ours(xi).max(1).values.sum().backward()
        ours.zero_grad(set_to_none=True)

    memory = {
        "model": name,
        "batch": batches[-1],
        "explain_mib": peak_memory_mib(_explain(ours, x)),
        "fwd_bwd_mib": peak_memory_mib(fwd_bwd),
    }
    memory.update(exactness(ours, torch.rand(4, 3, 224, 224, device="cuda")))
    if compiled:
        memory.update(compile_s_bcos=compiled["bcos"][1], compile_s_tv=compiled["tv"][1])
    print(json.dumps(memory), flush=True)
    rows.append(memory)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,resnet50,densenet121")
    parser.add_argument("--batches", default="1,8,32,64,128")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--json", help="also write every row to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); nothing was measured")
        sys.exit(2)
    torch.backends.cudnn.benchmark = True
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}, {platform.machine()}",
        flush=True,
    )
    rows = []
    for name in args.models.split(","):
        rows += bench_model(name, [int(b) for b in args.batches.split(",")], args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
