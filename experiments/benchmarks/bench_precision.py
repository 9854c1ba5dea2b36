"""Time to precision: deltastats against the plain PyTorch pipeline a user would write.

Run (from the repository root)::

    python experiments/benchmarks/bench_precision.py            # target 1 %, one repetition
    python experiments/benchmarks/bench_precision.py --reps 2   # two interleaved repetitions
    python experiments/benchmarks/bench_precision.py --quick    # target 5 %: a smoke run

Workload: the default experiment (``deltastats.Experiment()``: tanh, width 128, depth 10,
σ_w² = 1.5, σ_b = 0, Gaussian inputs N(0, I), zero targets, loss ½‖g − y‖², float64, chunks
of ``Experiment.chunk`` networks) at the inputs per network B that
:func:`deltastats.suggest_allocation` proposes from a pilot run (costs per network and per
input measured on this machine, as in ``bench_scale.py``). Each contender samples networks
chunk by chunk until every layer's E[δ²] is known to 1 %: the 95 % confidence-interval
half-width, t_{M−1}·SE with SE from the per-network means (networks are the independent
unit), is ≤ 1 % of the estimate on every layer, with at least
:data:`deltastats.MIN_NETWORKS` networks, checked after every chunk. That is the stopping
rule of ``estimate(..., until_rel_error=0.01)``.

Contenders, each in a fresh interpreter (so that each one's peak memory is its own), one
after the other within a repetition (interleaved over repetitions, so load from other jobs
on the machine hits all alike):

(a) ``deltastats.estimate(..., until_rel_error=0.01)``: all statistics of every layer (moments
    of δ and z, ICCs, gradients, Stein moments), per-network parameter and input streams;
(b) plain PyTorch (float64), with one thread and (b') with one per CPU: per chunk
    ``torch.randn`` weights and inputs, forward with ``bmm``, ``retain_grad`` on every z (z⁽¹⁾
    made a leaf, so autograd computes no input or weight gradients), one ``backward()``, and
    per-network sums of δ and δ² per layer kept; the same stopping rule on the per-network
    means of δ². On a shared machine PyTorch's OpenMP threads can lose more to a busy core
    than they gain, so the faster of (b) and (b') in each repetition is the baseline.

Prints networks/s, seconds to the target, the networks used, the peak resident memory of each
interpreter (``ru_maxrss``; the RSS after the imports in brackets), the ratio of the times,
the CPU model and its vector extensions. Target: (a) ≥ 3× faster than (b). Also (a'): (a)
stopping on ``delta_sq_cv``, the same E[δ²] with a control variate of exact mean. Writes
``results/benchmarks_precision.md`` and prints it.

The stage breakdown (draws, engine, accumulation, run one after the other) is timed at the
suggested B and at B = :data:`ISSUE_BATCH` = 64, the setting of the performance issue's own
breakdown, so the accumulation/engine ratio is shown where the run spends its time and where
the target was set.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from bench_arrays import cpu_model, usable_cpus  # noqa: E402  (the benchmarks' one CPU probe)
from bench_rng import cpu_flags  # noqa: E402

#: Speed-up of deltastats over the plain PyTorch pipeline the issue asks for.
TARGET_SPEEDUP = 3.0
#: The inputs per network of the performance issue's stage breakdown (1024 networks).
ISSUE_BATCH = 64
DS = "(a) deltastats estimate"
DSCV = "(a') deltastats estimate, stopping on delta_sq_cv (control variate)"
#: PyTorch with one thread and with one per CPU: on a shared machine its OpenMP threads can
#: lose far more to a busy core than they gain, so the faster of the two is the baseline.
TORCH1, TORCHN = "(b) plain PyTorch, 1 thread", "(b') plain PyTorch, {n} threads"


def rss_mb() -> float:
    """Current resident memory of this process in MB (psutil, else the peak so far)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (``ru_maxrss`` is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---- the two contenders (run in child interpreters) -----------------------------------------
def run_deltastats(
    batch: int, target: float, cap: int, seed: int, statistic: str = "delta_sq"
) -> dict:
    """``estimate(..., until_rel_error=target)`` on the default experiment, stopping on
    ``statistic`` (``delta_sq``, or ``delta_sq_cv``: the same E[δ²] with its control
    variate)."""
    import deltastats as ds
    from deltastats.config import Experiment

    exp = Experiment()
    net, xlaw, ylaw = exp.net(), exp.input_law(), exp.target_law()
    warnings.simplefilter("ignore")
    # Warm-up: compiled kernels from numba's cache, thread pools, the engine's workspace.
    ds.estimate(net, xlaw, ylaw, n_networks=2 * exp.chunk, batch=batch, seed=seed + 1)
    base = rss_mb()
    t0 = time.perf_counter()
    est = ds.estimate(
        net,
        xlaw,
        ylaw,
        n_networks=cap,
        batch=batch,
        seed=seed,
        chunk=exp.chunk,
        until_rel_error=target,
        until_statistics=(statistic,),
    )
    seconds = time.perf_counter() - t0
    rows = est.per_layer(statistic)
    return {
        "seconds": seconds,
        "networks": int(est.n_networks),
        "rel_error": float(est.rel_error()),
        "delta_sq": [float(v) for v in rows["estimate"]],
        "rss_after_imports_mb": base,
        "peak_rss_mb": peak_rss_mb(),
        "chunk": exp.chunk,
    }


def run_breakdown(batch: int, n_networks: int, seed: int) -> dict:
    """Seconds of deltastats' chunk loop by stage, the stages run one after the other (not
    overlapped, so each is timed alone): draws (parameters, inputs, targets), engine,
    accumulation, over ``n_networks`` networks of the default experiment."""
    from deltastats.config import Experiment
    from deltastats.stats.design import Design

    exp = Experiment()
    design = Design(
        exp.net(), exp.input_law(), exp.target_law(), n_networks=n_networks, batch=batch,
        seed=seed, chunk=exp.chunk,
    )  # fmt: skip
    acc = design.accumulator()
    times = {"draws": 0.0, "engine": 0.0, "accumulation": 0.0}
    spare = None
    for i, start in enumerate(range(0, n_networks + 2 * exp.chunk, exp.chunk)):
        if i == 2:  # the first two chunks warm up (compiled kernels, memory)
            times = dict.fromkeys(times, 0.0)
        t0 = time.perf_counter()
        params, x, y = design.draw(start, exp.chunk, out=spare)
        t1 = time.perf_counter()
        trace = design.backprop(params, x, y)
        t2 = time.perf_counter()
        acc.update(trace, params=params, x=x)
        t3 = time.perf_counter()
        spare = params
        times["draws"] += t1 - t0
        times["engine"] += t2 - t1
        times["accumulation"] += t3 - t2
    return times


def run_torch(
    batch: int, target: float, cap: int, seed: int, threads: int, time_limit: float | None = None
) -> dict:
    """The plain PyTorch pipeline: draw, forward, autograd backward, per-network sums."""
    import torch
    from scipy import stats

    import deltastats as ds
    from deltastats.config import Experiment

    exp = Experiment()
    widths = exp.layer_widths()
    L = len(widths) - 1
    scale = [exp.sigma_w / np.sqrt(n) for n in widths[:-1]]
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    # Per-network sums of δ and δ² of every layer (what the estimate needs, and E[δ]).
    s1 = np.zeros((cap, L))
    s2 = np.zeros((cap, L))
    count = np.array([batch * n for n in widths[1:]], dtype=np.float64)

    def chunk(M: int, out1: np.ndarray, out2: np.ndarray) -> None:
        W = [
            torch.randn(M, b, a, dtype=torch.float64, generator=gen) * s
            for a, b, s in zip(widths[:-1], widths[1:], scale)
        ]
        h = torch.randn(M, batch, widths[0], dtype=torch.float64, generator=gen)
        zs = []
        for l in range(L):
            z = torch.bmm(h, W[l].transpose(1, 2))  # σ_b = 0: no biases
            if l == 0:
                z = z.detach().requires_grad_()  # δ⁽¹⁾ is wanted, ∂L/∂x and ∂L/∂W are not
            else:
                z.retain_grad()
            zs.append(z)
            h = torch.tanh(z) if l < L - 1 else z  # linear output
        (0.5 * (h * h).sum()).backward()  # targets 0: L = ½‖g‖² per sample
        with torch.no_grad():
            for l, z in enumerate(zs):
                d = z.grad
                out1[:, l] = d.sum(dim=(1, 2)).numpy()
                out2[:, l] = (d * d).sum(dim=(1, 2)).numpy()

    def rel_error(M: int) -> float:
        means = s2[:M] / count  # per-network E[δ²] of every layer
        est = means.mean(axis=0)
        se = means.std(axis=0, ddof=1) / np.sqrt(M)
        half = stats.t.ppf(0.975, M - 1) * se
        return float(np.max(np.abs(half / est)))

    C = exp.chunk
    chunk(C, np.empty((C, L)), np.empty((C, L)))  # warm-up
    base = rss_mb()
    t0 = time.perf_counter()
    done = 0
    stopped = False
    while done < cap:
        M = min(C, cap - done)
        chunk(M, s1[done : done + M], s2[done : done + M])
        done += M
        if done >= ds.MIN_NETWORKS and rel_error(done) <= target:
            break
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            stopped = True  # already slower than another run: it cannot be the baseline
            break
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "networks": done,
        "rel_error": rel_error(done),
        "delta_sq": [float(v) for v in (s2[:done] / count).mean(axis=0)],
        "rss_after_imports_mb": base,
        "peak_rss_mb": peak_rss_mb(),
        "chunk": C,
        "torch": torch.__version__,
        "stopped": stopped,
    }


# ---- the allocation ---------------------------------------------------------------------------
def suggested_batch(target: float, seed: int) -> tuple[int, dict]:
    """B from :func:`deltastats.suggest_allocation` on a pilot run, with measured costs:
    c_net the time to draw one network's parameters, c_in one input's forward/backward."""
    import deltastats as ds
    from deltastats.config import Experiment

    exp = Experiment()
    net, xlaw, ylaw = exp.net(), exp.input_law(), exp.target_law()
    warnings.simplefilter("ignore")
    net.sample(64, 0)  # warm-up
    t0 = time.perf_counter()
    params = net.sample(64, 0)
    c_net = (time.perf_counter() - t0) / 64
    x = xlaw.sample(net.widths[0], 64, 0, n_networks=64)
    y = ylaw.sample(x, net.widths[-1], 0)
    ds.backprop(net, params, x, y)
    t0 = time.perf_counter()
    ds.backprop(net, params, x, y)
    c_in = (time.perf_counter() - t0) / (64 * 64)
    pilot = ds.estimate(net, xlaw, ylaw, n_networks=128, batch=exp.batch, seed=seed + 2)
    advice = ds.suggest_allocation(pilot, c_net, c_in, rel_half_width=target)
    b_star = int(np.clip(round(advice["inputs_per_network"].median()), 1, 1024))
    return b_star, {"cost_per_network_ms": 1e3 * c_net, "cost_per_input_ms": 1e3 * c_in}


# ---- driver -----------------------------------------------------------------------------------
def child(kind: str, args, threads: int = 1, time_limit: float | None = None) -> dict:
    """Run one contender in a fresh interpreter and return what it printed."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--batch",
        str(args.batch),
        "--target",
        str(args.target),
        "--cap",
        str(args.cap),
        "--seed",
        str(args.seed),
        "--threads",
        str(threads),
        "--breakdown-networks",
        str(args.breakdown_networks),
    ] + (["--time-limit", str(time_limit)] if time_limit is not None else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(runs: dict, args, costs: dict, elapsed: float, breakdown: dict) -> str:
    numeric = ("seconds", "networks", "peak_rss_mb", "rss_after_imports_mb")
    med = {k: {f: float(np.median([r[f] for r in v])) for f in numeric} for k, v in runs.items()}
    # The baseline of each repetition: the faster PyTorch run of that repetition.
    torch_keys = [k for k in runs if k not in (DS, DSCV)]
    best = [min((runs[k][i] for k in torch_keys if not runs[k][i].get("stopped")),
                key=lambda r: r["seconds"])
            for i in range(len(runs[DS]))]  # fmt: skip
    ratios = [t["seconds"] / d["seconds"] for d, t in zip(runs[DS], best)]
    rates = [
        (d["networks"] / d["seconds"]) / (t["networks"] / t["seconds"])
        for d, t in zip(runs[DS], best)
    ]
    ratio = float(np.median(ratios))
    cv_ratios = [t["seconds"] / d["seconds"] for d, t in zip(runs[DSCV], best)]
    verdict = "met" if ratio >= TARGET_SPEEDUP else "NOT met"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    quick = " --quick" if args.quick else ""
    lines = [
        "# Time to precision: deltastats vs plain PyTorch",
        "",
        f"Generated by `python experiments/benchmarks/bench_precision.py{quick}` on "
        f"{_dt.datetime.now():%Y-%m-%d %H:%M} ({elapsed:.0f} s).",
        "",
        f"- CPU: {cpu_model()} ({cpu_flags()}), {usable_cpus()} usable CPUs (shared: "
        f"1-minute load average {load:.1f} at the end); torch {runs[TORCH1][0]['torch']}, "
        "float64.",
        "- Workload: the default experiment (tanh, width 128, depth 10, σ_w² = 1.5, Gaussian "
        f"inputs, zero targets, ½‖g − y‖²), chunks of {runs[DS][0]['chunk']} networks, "
        f"B = {args.batch} inputs per network"
        + (
            f" (`suggest_allocation` from a pilot; costs {costs['cost_per_network_ms']:.3f} ms "
            f"per network, {costs['cost_per_input_ms']:.4f} ms per input)"
            if costs
            else " (given)"
        )
        + ".",
        f"- Stop: every layer's E[δ²] 95 % CI half-width ≤ {100 * args.target:g} % of its "
        "value (≥ 100 networks), checked after every chunk (`until_rel_error`).",
        f"- {args.reps} repetition(s), the contenders interleaved; each in a fresh interpreter. "
        "Peak RSS is the interpreter's `ru_maxrss` (RSS after imports and warm-up in brackets).",
        "",
        "| contender | seconds | networks | networks/s | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in runs:
        m = med[k]
        if any(r.get("stopped") for r in runs[k]):
            lines.append(
                f"| {k} | > {m['seconds']:.1f} (stopped: slower than the 1-thread run) | "
                f"{m['networks']:,.0f} so far | {m['networks'] / m['seconds']:.0f} | "
                f"{m['peak_rss_mb']:.0f} ({m['rss_after_imports_mb']:.0f}) |"
            )
            continue
        lines.append(
            f"| {k} | {m['seconds']:.1f} | {m['networks']:,.0f} | "
            f"{m['networks'] / m['seconds']:.0f} | {m['peak_rss_mb']:.0f} "
            f"({m['rss_after_imports_mb']:.0f}) |"
        )
    lines += [
        "",
        f"Layer 1 E[δ²]: deltastats {runs[DS][0]['delta_sq'][0]:.5g}, PyTorch "
        f"{runs[TORCH1][0]['delta_sq'][0]:.5g} (independent draws; they agree to the precision).",
        "",
        "Baseline: the faster PyTorch run of each repetition "
        f"({', '.join(str(b['threads']) for b in best)} thread(s)).",
        "",
        f"Time to precision, PyTorch / deltastats: **{ratio:.2f}×** (per repetition: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}); networks/s ratio "
        f"{float(np.median(rates)):.2f}×. Target ≥ {TARGET_SPEEDUP:g}×: **{verdict}**.",
        "",
        "With the control variate (`delta_sq_cv`: the same E[δ²], a smaller standard error, "
        "its own stopping rule), PyTorch / deltastats: "
        f"**{float(np.median(cv_ratios)):.2f}×** "
        f"(per repetition: {', '.join(f'{r:.2f}' for r in cv_ratios)}).",
        "",
        "Where deltastats' time goes (the stages run one after the other; `estimate` overlaps "
        "the draws of the next chunk with the engine and accumulation of the current one):",
        "",
        "| B | networks | stage | seconds | share | ms per network |",
        "|---:|---:|---|---:|---:|---:|",
    ]
    verdicts = []
    for B, (n, times) in breakdown.items():
        total = sum(times.values())
        lines += [
            f"| {B} | {n:,} | {k} | {v:.2f} | {100 * v / total:.0f} % | {1e3 * v / n:.3f} |"
            for k, v in times.items()
        ]
        share = times["accumulation"] / times["engine"]
        verdicts.append(
            f"- B = {B}: accumulation / engine = {share:.2f} (target ≤ 0.25: "
            f"{'met' if share <= 0.25 else 'NOT met'})"
        )
    lines += ["", *verdicts, ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="target 5 %%: a smoke run")
    parser.add_argument("--reps", type=int, default=1, help="interleaved repetitions")
    parser.add_argument("--batch", type=int, default=None, help="B (default: suggested)")
    parser.add_argument("--target", type=float, default=None, help="relative half-width")
    parser.add_argument("--cap", type=int, default=200_000, help="at most this many networks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--child",
        choices=("deltastats", "deltastats_cv", "torch", "breakdown"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--time-limit", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--breakdown-networks", type=int, default=None, help="networks of the stage timing"
    )
    parser.add_argument("--output", default=str(ROOT / "results" / "benchmarks_precision.md"))
    args = parser.parse_args(argv)
    if args.target is None:
        args.target = 0.05 if args.quick else 0.01
    if args.child:
        if args.child in ("deltastats", "deltastats_cv"):
            stat = "delta_sq_cv" if args.child == "deltastats_cv" else "delta_sq"
            out = run_deltastats(args.batch, args.target, args.cap, args.seed, stat)
        elif args.child == "breakdown":
            out = run_breakdown(args.batch, args.breakdown_networks, args.seed)
        else:
            out = run_torch(
                args.batch, args.target, args.cap, args.seed, args.threads, args.time_limit
            )
        print(json.dumps(out))
        return 0
    t0 = time.perf_counter()
    costs = {}
    if args.batch is None:
        args.batch, costs = suggested_batch(args.target, args.seed)
    print(f"… B = {args.batch}", file=sys.stderr, flush=True)
    if args.breakdown_networks is None:
        args.breakdown_networks = 256 if args.quick else 2048
    cpus = usable_cpus()
    torchn = TORCHN.format(n=cpus)
    contenders = [("deltastats", DS, 1), ("deltastats_cv", DSCV, 1), ("torch", TORCH1, 1)]
    if cpus > 1:
        contenders.append(("torch", torchn, cpus))
    runs: dict = {key: [] for _, key, _ in contenders}
    for rep in range(args.reps):
        for kind, key, threads in contenders:
            # A PyTorch run slower than the one before it cannot be the baseline: it is
            # stopped there (and reported as at least that slow) rather than run to the end.
            limit = runs[TORCH1][rep]["seconds"] if key == torchn else None
            r = child(kind, args, threads, limit)
            r["threads"] = threads
            runs[key].append(r)
            print(f"… {key} rep {rep}: {r['seconds']:.1f} s", file=sys.stderr, flush=True)
    breakdown = {}
    for B in dict.fromkeys((args.batch, ISSUE_BATCH)):
        n = args.breakdown_networks if B == args.batch else max(256, args.breakdown_networks // 2)
        breakdown[B] = (
            n,
            child(
                "breakdown",
                argparse.Namespace(**{**vars(args), "batch": B, "breakdown_networks": n}),
            ),
        )
        print(f"… breakdown at B = {B}: {breakdown[B][1]}", file=sys.stderr, flush=True)
    text = render(runs, args, costs, time.perf_counter() - t0, breakdown)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
