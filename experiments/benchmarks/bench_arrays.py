"""Speed of ``estimate_arrays`` on precomputed arrays against the engine's own accumulation path.

Run (from the repository root)::

    python experiments/benchmarks/bench_arrays.py            # M = 512, 9 repetitions
    python experiments/benchmarks/bench_arrays.py --quick    # M = 128, 3 repetitions

Workload: one backprop trace of the engine (``deltastats.backprop`` with gradients) of M = 512
random tanh networks of depth L = 10 and constant width n = 128 (widths ``(128,) * 11``,
linear output), B = 16 Gaussian inputs per network, loss ½‖g − y‖², float64. Its arrays —
δ⁽ˡ⁾ and z⁽ˡ⁾ ``(M, B, n)``, the losses ``(M, B)`` and the weight gradients ``(M, n, n)`` of
every layer — are computed once, before any timing, and every contender turns the same
arrays into estimates:

(a) ``ds.estimate_arrays(delta, z=…, loss=…, grads=…)``: the public call for a researcher's
    own arrays, end to end (argument checks, its own chunks of networks, features, reduction
    tree, intervals of every statistic);
(b) the engine's path: ``BackpropAccumulator(net, B).update(trace)`` then ``summarize``, what
    ``ds.estimate`` does with each trace (without the engine pass itself);
(a'') ``ArrayAccumulator().update(…)`` on all M networks at once, then ``.result()``: (a)
    without its chunks of networks (which bound its memory), the chunking of (b);
(a') ``ArrayAccumulator().update(…)`` on all M networks at once: features and reduction only;
(b') ``BackpropAccumulator.update(trace)``: features and reduction only.

Contenders are timed in the same run, interleaved repetition by repetition (so load from other
jobs hits all of them alike), after one warm-up call each; rates are networks per second of
the best repetition (and the median). The estimates of (a) and (b) are checked to be the same
numbers. Writes ``results/benchmarks_arrays.md`` and prints it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import deltastats as ds  # noqa: E402
from deltastats.stats.accumulators import BackpropAccumulator  # noqa: E402
from deltastats.stats.intervals import summarize  # noqa: E402

WIDTH, DEPTH, BATCH, NETWORKS = 128, 10, 16, 512
SIGMA_W, SIGMA_B = 1.0, 0.1
FULL_A, FULL_B = "(a) estimate_arrays, end to end", "(b) engine path: update + summarize"
ONE_A = "(a'') ArrayAccumulator.update + result, one chunk"
UPD_A, UPD_B = "(a') ArrayAccumulator.update", "(b') BackpropAccumulator.update"


# ---- machine ---------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name (Linux: the first ``model name`` of the kernel's CPU list), else
    what :mod:`platform` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# ---- workload --------------------------------------------------------------------------------
def make_trace(M: int, B: int, seed: int = 0):
    """The engine's spec and trace (with weight gradients) of M networks × B inputs."""
    net = ds.MLP((WIDTH,) * (DEPTH + 1), activation="tanh", sigma_w=SIGMA_W, sigma_b=SIGMA_B)
    params = net.sample(M, seed)
    x = ds.inputs.gaussian().sample(WIDTH, B, seed, n_networks=M)
    y = ds.targets.gaussian(0.5).sample(x, WIDTH, seed)
    return net, ds.backprop(net, params, x, y)


def contenders(net, trace) -> dict[str, Callable]:
    """Name → a call that turns the trace's arrays into estimates (or accumulated features)."""
    B = trace.loss.shape[1]
    arrays = {
        "delta": list(trace.delta),
        "z": list(trace.z),
        "loss": trace.loss,
        "grads": list(trace.grad_weights),
    }

    def full_arrays():
        return ds.estimate_arrays(
            arrays["delta"], z=arrays["z"], loss=arrays["loss"], grads=arrays["grads"]
        )

    def full_engine():
        acc = BackpropAccumulator(net, B)
        acc.update(trace)
        return summarize(acc)

    def one_chunk_arrays():
        return update_arrays().result()

    def update_arrays():
        return ds.ArrayAccumulator().update(
            arrays["delta"], z=arrays["z"], loss=arrays["loss"], grads=arrays["grads"]
        )

    def update_engine():
        acc = BackpropAccumulator(net, B)
        acc.update(trace)
        return acc

    return {
        FULL_A: full_arrays,
        FULL_B: full_engine,
        ONE_A: one_chunk_arrays,
        UPD_A: update_arrays,
        UPD_B: update_engine,
    }


def time_interleaved(runners: dict, reps: int) -> dict[str, np.ndarray]:
    """Wall times per contender; one warm-up call each, then ``reps`` interleaved rounds."""
    for run in runners.values():
        run()
    times = {k: [] for k in runners}
    for _ in range(reps):
        for k, run in runners.items():
            gc.collect()
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


def same_numbers(a: ds.Estimates, b: ds.Estimates) -> float:
    """Max |a − b| / max(|b|, tiny) over the numeric columns of the rows both tables hold
    (0.0: bit for bit)."""
    keys = ["layer", "unit", "statistic"]
    cols = ["estimate", "std_error", "ci_low", "ci_high"]
    m = a.table.merge(b.table, on=keys, suffixes=("_a", "_b"))
    if len(m) != len(b.table):
        raise AssertionError(f"estimate_arrays has {len(m)} of the engine's {len(b.table)} rows")
    worst = 0.0
    for c in cols:
        x, y = m[f"{c}_a"].to_numpy(float), m[f"{c}_b"].to_numpy(float)
        both = np.isfinite(x) & np.isfinite(y)
        if not np.array_equal(np.isfinite(x), np.isfinite(y)):
            raise AssertionError(f"{c}: the two paths disagree on which values are finite")
        if both.any():
            d = np.abs(x[both] - y[both]) / np.maximum(np.abs(y[both]), 1e-300)
            worst = max(worst, float(d.max()))
    return worst


# ---- report ----------------------------------------------------------------------------------
def render(times: dict, check: float, args, elapsed: float) -> str:
    """The markdown report of one run."""
    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    M = args.networks
    best = {k: float(t.min()) for k, t in times.items()}
    med = {k: float(np.median(t)) for k, t in times.items()}
    quick = " --quick" if args.quick else ""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        "# Benchmark: `estimate_arrays` against the engine's accumulation",
        "",
        f"Generated by `python experiments/benchmarks/bench_arrays.py{quick}` on {stamp}"
        f" ({elapsed:.0f} s).",
        "",
        f"- CPU: {cpu_model()} ({platform.machine()}), {usable_cpus()} usable CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}, BLAS: "
        f"{'; '.join(blas) or 'unknown'}.",
        f"- Workload: one engine trace of M = {M} tanh networks, depth L = {DEPTH}, width "
        f"n = {WIDTH}, B = {args.batch} inputs each, float64: δ, z `(M, B, n)` and the weight "
        "gradients `(M, n, n)` of every layer and the losses `(M, B)`, computed once before "
        "timing; every contender gets the same arrays.",
        f"- {args.reps} interleaved repetitions after one warm-up each; networks/s of the best "
        "repetition (median in brackets). All numbers are from this one run on this CPU.",
        f"- Check: estimates of (a) and (b), max relative difference over every row = {check:.1e}"
        + (" (bit for bit)." if check == 0 else "."),
        "",
        "| contender | best (ms) | median (ms) | networks/s, best [median] | rate / engine's |",
        "|---|---:|---:|---:|---:|",
    ]
    pairs = {FULL_A: FULL_B, FULL_B: FULL_B, ONE_A: FULL_B, UPD_A: UPD_B, UPD_B: UPD_B}
    for k in times:
        ratio = best[pairs[k]] / best[k]
        lines.append(
            f"| {k} | {1e3 * best[k]:.1f} | {1e3 * med[k]:.1f} | "
            f"{M / best[k]:,.0f} [{M / med[k]:,.0f}] | {ratio:.2f} |"
        )
    lines += [
        "",
        "Ratios (networks/s of the arrays path over the engine's, best repetitions; medians in "
        "brackets):",
        "",
        f"- end to end, (a)/(b): {best[FULL_B] / best[FULL_A]:.2f} "
        f"[{med[FULL_B] / med[FULL_A]:.2f}]",
        f"- end to end in one chunk, (a'')/(b): {best[FULL_B] / best[ONE_A]:.2f} "
        f"[{med[FULL_B] / med[ONE_A]:.2f}]",
        f"- accumulation only, (a')/(b'): {best[UPD_B] / best[UPD_A]:.2f} "
        f"[{med[UPD_B] / med[UPD_A]:.2f}]",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build the trace, time the contenders, write and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="M = 128, 3 repetitions")
    parser.add_argument("--networks", type=int, default=None, help=f"M (default {NETWORKS})")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"B (default {BATCH})")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 9)")
    parser.add_argument("--output", default=str(ROOT / "results" / "benchmarks_arrays.md"))
    args = parser.parse_args(argv)
    if args.networks is None:
        args.networks = 128 if args.quick else NETWORKS
    if args.reps is None:
        args.reps = 3 if args.quick else 9
    t0 = time.perf_counter()
    print(f"… trace of {args.networks} networks", file=sys.stderr, flush=True)
    net, trace = make_trace(args.networks, args.batch)
    runners = contenders(net, trace)
    check = same_numbers(runners[FULL_A](), runners[FULL_B]())
    print(f"… timing ({args.reps} repetitions)", file=sys.stderr, flush=True)
    times = time_interleaved(runners, args.reps)
    text = render(times, check, args, time.perf_counter() - t0)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
