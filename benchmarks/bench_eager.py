"""Eager B-cos against torchvision, side by side (benchmarks/RESULTS.md "Eager speed and memory", issue 23).

Forward: for each B-cos model and its torchvision counterpart (same architecture, random weights, eval mode,
float32, ``torch.no_grad()``), ``--rounds`` rounds that each time ``--reps`` calls of both back to back, the
order alternating between rounds; the ratio is the median of the per-round ratios B-cos / torchvision (< 1.15
is the issue's goal), with their range; ``--compiled`` compares ``torch.compile``'d B-cos with compiled
torchvision the same way (compile times reported); ``--frozen`` compares ``alignnet.freeze``'d B-cos with the
eager B-cos model, with torchvision, and with torchvision whose batch norms are folded into its convolutions
(``torch.fx`` fusion: the same kind of inference snapshot); ``--decompose`` attributes the frozen model's time
to the B-cos nonlinearity: the frozen model as it is, without the patch norms (a constant 1 in their place),
without the B-cos scaling, and without either (the convolutions alone: a lower bound for any B-cos forward),
each against torchvision (these variants compute wrong outputs; they only time the parts). Explain: ``alignnet.explain`` per image at batch 8 against the same
model's forward per image at batch 8 (the physical limit is about 2: one forward plus one input-only
backward), and against the ``bcos`` package's ``model.explain`` one image at a time (its official loop), both
by alternating rounds. Memory (``--memory``): each measurement in a fresh subprocess, the peak resident set
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``) above the resident set before the call:
``alignnet.explain`` at batch 8, a plain forward + backward of the same model (input gradient and weight
gradients, as training does), the forward + input-only backward, and the ``bcos`` package's explain loop.

    python benchmarks/bench_eager.py [--models resnet18,resnet50,densenet121] [--batches 1,8] [--rounds 21]
                                     [--reps 2] [--threads 2] [--compiled] [--frozen] [--decompose] [--explain] [--memory]
                                     [--skip-bcos]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings

import torch

import alignnet


def _calls(fn, reps: int) -> float:
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def alternating(a, b, rounds: int, reps: int) -> tuple[float, float, float, float, float]:
    """Median per-round ratio time(a) / time(b), its min and max, and the median seconds per call of a and b."""
    a(), b()  # warm-up
    ratios, ta, tb = [], [], []
    for r in range(rounds):
        if r % 2:
            sb = _calls(b, reps)
            sa = _calls(a, reps)
        else:
            sa = _calls(a, reps)
            sb = _calls(b, reps)
        ratios.append(sa / sb)
        ta.append(sa)
        tb.append(sb)
    return statistics.median(ratios), min(ratios), max(ratios), statistics.median(ta), statistics.median(tb)


def _models(name: str):
    import torchvision

    torch.manual_seed(0)
    ours = alignnet.create_model(f"bcos_{name}").eval()
    tv = getattr(torchvision.models, name)().eval()
    return ours, tv


def _no_grad(model, x):
    def f():
        with torch.no_grad():
            model(x)

    return f


def bench_forward(name: str, batch: int, rounds: int, reps: int, compiled: bool = False) -> dict:
    ours, tv = _models(name)
    x = torch.rand(batch, 3, 224, 224)
    row = {"model": name, "batch": batch}
    if compiled:  # both compiled (inductor, one graph per batch size); the first call is the compilation
        ours, tv = torch.compile(ours, dynamic=False), torch.compile(tv, dynamic=False)
        for key, model in (("ours_compile_s", ours), ("tv_compile_s", tv)):
            t = time.perf_counter()
            _no_grad(model, x)()
            row[key] = time.perf_counter() - t
    med, lo, hi, t_ours, t_tv = alternating(_no_grad(ours, x), _no_grad(tv, x), rounds, reps)
    row.update(ratio=med, min=lo, max=hi, ours_ms=1e3 * t_ours, tv_ms=1e3 * t_tv)
    return row


def bench_frozen(name: str, batch: int, rounds: int, reps: int) -> dict:
    """``alignnet.freeze``'d B-cos against the eager B-cos model, against torchvision, and against torchvision with
    its batch norms folded into the convolutions (``torch.fx.experimental.optimization.fuse``: the same kind of
    inference snapshot, so the fair pairing)."""
    from torch.fx.experimental.optimization import fuse

    ours, tv = _models(name)
    frozen, tv_fused = alignnet.freeze(ours), fuse(tv)
    x = torch.rand(batch, 3, 224, 224)
    row = {"model": name, "batch": batch}
    for key, other in (("eager", ours), ("tv", tv), ("tv_fused", tv_fused)):
        med, lo, hi, t_frozen, t_other = alternating(_no_grad(frozen, x), _no_grad(other, x), rounds, reps)
        row[key] = (med, lo, hi, 1e3 * t_frozen, 1e3 * t_other)
    return row


def bench_decompose(name: str, batch: int, rounds: int, reps: int) -> dict:
    """The frozen model's time without its patch norms, without its scaling, and without both (the convolutions
    alone), each against torchvision. The variants replace two functions of ``alignnet.layers.bcos`` for the
    duration of a call and compute wrong outputs: they only say where the time goes."""
    from unittest import mock

    from alignnet.layers import bcos

    ours, tv = _models(name)
    frozen = alignnet.freeze(ours)
    x = torch.rand(batch, 3, 224, 224)
    ones: dict[tuple, torch.Tensor] = {}

    def constant_norms(inp, kernel_size, stride=1, padding=0, groups=1):
        (kh, kw), (sh, sw), (ph, pw) = bcos._pair(kernel_size), bcos._pair(stride), bcos._pair(padding)
        shape = (inp.shape[0], groups, bcos._out_len(inp.shape[2], kh, sh, ph), bcos._out_len(inp.shape[3], kw, sw, pw))
        return ones.setdefault(shape, torch.ones(shape, dtype=inp.dtype))

    def variant(norms: bool, scaling: bool):
        patches = []
        if not norms:
            patches.append(mock.patch.object(bcos, "patch_norms", constant_norms))
        if not scaling:
            patches.append(mock.patch.object(bcos, "_bcos_scaling", lambda linear, *args, **kwargs: linear))

        def f():
            for patch in patches:
                patch.start()
            try:
                _no_grad(frozen, x)()
            finally:
                for patch in patches:
                    patch.stop()

        return f

    row = {"model": name, "batch": batch}
    for key, norms, scaling in (
        ("frozen", True, True),
        ("no_norms", False, True),
        ("no_scaling", True, False),
        ("convolutions", False, False),
    ):
        med, lo, hi, t_ours, t_tv = alternating(variant(norms, scaling), _no_grad(tv, x), rounds, reps)
        row[key] = (med, lo, hi, 1e3 * t_ours)
    return row


def _bcos_package_model(name: str, ours):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from bcos.models import pretrained

        theirs = getattr(pretrained, name)(pretrained=False).eval()
    ours.load_state_dict(alignnet.models.from_bcos(f"bcos_{name}", theirs.state_dict()).state_dict())
    return theirs


def bench_explain(name: str, rounds: int, reps: int, with_bcos: bool) -> dict:
    ours, _ = _models(name)
    x = torch.rand(8, 3, 224, 224)

    def explain():
        alignnet.explain(ours, x)

    med, lo, hi, t_e, t_f = alternating(explain, _no_grad(ours, x), rounds, reps)
    row = {"model": name, "explain_over_forward": med, "min": lo, "max": hi, "explain_ms_per_image": 1e3 * t_e / 8}
    row["forward_ms_per_image"] = 1e3 * t_f / 8
    if with_bcos:
        theirs = _bcos_package_model(name, ours)
        x6 = torch.cat([x, 1 - x], 1)

        def bcos_loop():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i in range(8):
                    theirs.explain(x6[i : i + 1].clone().requires_grad_(True))

        med, lo, hi, t_b, t_e = alternating(bcos_loop, explain, max(5, rounds // 2), 1)
        row.update(bcos_over_ours=med, bcos_min=lo, bcos_max=hi, bcos_ms_per_image=1e3 * t_b / 8)
    return row


# -- memory: one measurement per fresh process -------------------------------------------------------------


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _memory_child(name: str, what: str, batch: int) -> None:
    torch.set_num_threads(1)
    ours, _ = _models(name)
    x = torch.rand(batch, 3, 224, 224)
    if what == "bcos":
        theirs = _bcos_package_model(name, ours)
        x6 = torch.cat([x, 1 - x], 1)

        def run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i in range(batch):
                    theirs.explain(x6[i : i + 1].clone().requires_grad_(True))

    elif what == "explain":

        def run():
            alignnet.explain(ours, x)

    elif what in ("fwd_bwd", "fwd_bwd_input"):
        if what == "fwd_bwd_input":
            ours.requires_grad_(False)

        def run():
            xi = x.clone().requires_grad_(True)
            ours(xi).max(1).values.sum().backward()

    else:
        raise SystemExit(f"unknown measurement {what}")
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident set (Linux >= 4.0)
    run()
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024}))


def bench_memory(name: str, batch: int, with_bcos: bool) -> dict:
    row = {"model": name, "batch": batch}
    for what in ("explain", "fwd_bwd", "fwd_bwd_input") + (("bcos",) if with_bcos else ()):
        out = subprocess.run(
            [sys.executable, __file__, "--_memory-child", f"{name}:{what}:{batch}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row[what] = json.loads(out.strip().splitlines()[-1])["peak_mib"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="resnet18,resnet50,densenet121")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--explain", action="store_true", help="also explain at batch 8 against forward and bcos")
    parser.add_argument("--memory", action="store_true", help="also the peak memory of explain at batch 8")
    parser.add_argument("--no-forward", action="store_true", help="skip the forward comparison")
    parser.add_argument(
        "--compiled", action="store_true", help="compare torch.compile'd B-cos with compiled torchvision"
    )
    parser.add_argument(
        "--frozen", action="store_true", help="alignnet.freeze'd B-cos against eager B-cos and (fused) torchvision"
    )
    parser.add_argument(
        "--decompose", action="store_true", help="the frozen model without patch norms / scaling / both, against tv"
    )
    parser.add_argument("--skip-bcos", action="store_true", help="skip the bcos package")
    parser.add_argument("--_memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory_child:
        name, what, batch = args._memory_child.split(":")
        _memory_child(name, what, int(batch))
        return
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, "
        f"{args.rounds} rounds x {args.reps} calls; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if not args.no_forward:
        kind = "compiled " if args.compiled else ""
        extra = " compile s (B-cos, tv) |" if args.compiled else ""
        print(f"\n| model | batch | {kind}B-cos / torchvision (median, range) | B-cos ms | torchvision ms |{extra}")
        print("|---|---|---|---|---|" + ("---|" if args.compiled else ""), flush=True)
        for name in models:
            for batch in (int(b) for b in args.batches.split(",")):
                r = bench_forward(name, batch, args.rounds, args.reps, args.compiled)
                compile_s = f" {r['ours_compile_s']:.0f}, {r['tv_compile_s']:.0f} |" if args.compiled else ""
                print(
                    f"| {name} | {batch} | {r['ratio']:.3f}x ({r['min']:.2f}-{r['max']:.2f}) | "
                    f"{r['ours_ms']:.1f} | {r['tv_ms']:.1f} |{compile_s}",
                    flush=True,
                )
    if args.frozen:
        print(
            "\n| model | batch | frozen / eager B-cos | frozen / torchvision | frozen / torchvision with folded BN |"
            " frozen ms |"
        )
        print("|---|---|---|---|---|---|", flush=True)
        for name in models:
            for batch in (int(b) for b in args.batches.split(",")):
                r = bench_frozen(name, batch, args.rounds, args.reps)
                cells = " | ".join(f"{r[k][0]:.3f}x ({r[k][1]:.2f}-{r[k][2]:.2f})" for k in ("eager", "tv", "tv_fused"))
                print(f"| {name} | {batch} | {cells} | {r['tv'][3]:.1f} |", flush=True)
    if args.decompose:
        print(
            "\n| model | batch | frozen / tv | without patch norms / tv | without scaling / tv | convolutions alone / tv |"
        )
        print("|---|---|---|---|---|---|", flush=True)
        for name in models:
            for batch in (int(b) for b in args.batches.split(",")):
                r = bench_decompose(name, batch, args.rounds, args.reps)
                keys = ("frozen", "no_norms", "no_scaling", "convolutions")
                cells = " | ".join(f"{r[k][0]:.3f}x ({r[k][1]:.2f}-{r[k][2]:.2f}); {r[k][3]:.1f} ms" for k in keys)
                print(f"| {name} | {batch} | {cells} |", flush=True)
    if args.explain:
        print("\n| model (batch 8) | explain / forward (median, range) | explain ms/img | bcos loop / ours (range) |")
        print("|---|---|---|---|", flush=True)
        for name in models:
            r = bench_explain(name, args.rounds, args.reps, not args.skip_bcos)
            theirs = (
                f"{r['bcos_over_ours']:.2f}x ({r['bcos_min']:.2f}-{r['bcos_max']:.2f}; {r['bcos_ms_per_image']:.1f} ms/img)"
                if "bcos_over_ours" in r
                else "-"
            )
            print(
                f"| {name} | {r['explain_over_forward']:.2f}x ({r['min']:.2f}-{r['max']:.2f}) | "
                f"{r['explain_ms_per_image']:.1f} | {theirs} |",
                flush=True,
            )
    if args.memory:
        print(
            "\n| model (batch 8, 1 thread) | explain MiB | fwd+bwd MiB | fwd+input bwd MiB | bcos loop MiB | explain / fwd+bwd |"
        )
        print("|---|---|---|---|---|---|", flush=True)
        for name in models:
            r = bench_memory(name, 8, not args.skip_bcos)
            b = f"{r['bcos']:.0f}" if "bcos" in r else "-"
            print(
                f"| {name} | {r['explain']:.0f} | {r['fwd_bwd']:.0f} | {r['fwd_bwd_input']:.0f} | {b} | "
                f"{r['explain'] / r['fwd_bwd']:.2f} |",
                flush=True,
            )
    print(f"\nload at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
