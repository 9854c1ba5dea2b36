"""Scale benchmark: flat memory, time to precision, allocation gain, parallel sweeps.

Run:  python experiments/benchmarks/bench_scale.py [--quick] [--networks 10000 100000 1000000]

Measures, in one run, on this machine:
1. peak RSS of ``estimate`` over growing numbers of networks (width 128, depth 10), each size
   in its own subprocess (``ru_maxrss``), so one size's memory cannot hide another's;
2. wall time of ``estimate(…, until_rel_error=0.01)`` on the default experiment, with the
   default inputs per network and with the allocation ``suggest_allocation`` proposes from a
   pilot run (same target precision);
3. an 8-point sweep with ``--jobs 1`` (one core) and ``--jobs 2`` (speed-up ratio), and the
   same points in one process on the engine's 2 threads.
Writes ``results/benchmarks_scale.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, resource, sys, time, warnings
import deltastats as ds
warnings.simplefilter("ignore")
n, jobs = int(sys.argv[1]), int(sys.argv[2])
net = ds.MLP((128,) * 10 + (1,), activation="tanh", sigma_w=1.5 ** 0.5)
t0 = time.perf_counter()
est = ds.estimate(net, n_networks=n, batch=4, seed=0, chunk=64, n_jobs=jobs)
dt = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
print(json.dumps({"n": n, "jobs": jobs, "seconds": dt, "rss_mb": rss,
                  "delta_sq_1": float(est.per_layer("delta_sq")["estimate"].iloc[0])}))
"""


def _tree_rss_mb(proc) -> tuple[float, float]:
    """(sum, largest) resident memory of a process and all its descendants, in MB."""
    import psutil

    total = largest = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            rss = p.memory_info().rss / 2**20
        except psutil.Error:  # a worker that just exited
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def memory(sizes: list[int], jobs: int = 1) -> list[dict]:
    """Run each size in a fresh interpreter; sample the process tree's RSS every 0.2 s.

    ``ru_maxrss`` sees only the main process; with ``jobs > 1`` the loky workers hold the
    networks, so the peak of the whole tree (main + workers) is what must stay flat.
    """
    import psutil

    out = []
    for n in sizes:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(n), str(jobs)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        proc = psutil.Process(child.pid)
        peak_total = peak_one = 0.0
        while child.poll() is None:
            try:
                total, one = _tree_rss_mb(proc)
            except psutil.Error:
                break
            peak_total, peak_one = max(peak_total, total), max(peak_one, one)
            time.sleep(0.2)
        stdout, stderr = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"memory run n={n} failed:\n{stderr}")
        row = json.loads(stdout.strip().splitlines()[-1])
        row.update(tree_peak_mb=peak_total, largest_process_peak_mb=peak_one)
        out.append(row)
        print(f"  memory: {row}", flush=True)
    return out


def time_to_precision(quick: bool) -> dict:
    import deltastats as ds
    from deltastats.config import Experiment

    exp = Experiment()
    net, xlaw, ylaw = exp.net(), exp.input_law(), exp.target_law()
    target = 0.05 if quick else 0.01
    cap = 2_000 if quick else 100_000

    def run(batch: int) -> tuple[float, ds.Estimates]:
        t0 = time.perf_counter()
        est = ds.estimate(
            net, xlaw, ylaw, n_networks=cap, batch=batch, seed=1, chunk=64, until_rel_error=target
        )
        return time.perf_counter() - t0, est

    t_default, e_default = run(exp.batch)
    # Cost model for the allocation: time per network (sampling its parameters) and per input
    # (its forward/backward work), measured on a pilot.
    t0 = time.perf_counter()
    net.sample(64, 0)
    c_net = (time.perf_counter() - t0) / 64
    params = net.sample(64, 0)
    x = xlaw.sample(net.widths[0], 64, 0, n_networks=64)
    y = ylaw.sample(x, net.widths[-1], 0)
    t0 = time.perf_counter()
    ds.backprop(net, params, x, y)
    c_in = (time.perf_counter() - t0) / (64 * 64)
    pilot = ds.estimate(net, xlaw, ylaw, n_networks=128, batch=exp.batch, seed=2)
    advice = ds.suggest_allocation(pilot, c_net, c_in, rel_half_width=target)
    # Cap at 1024 inputs per network: beyond that one chunk's trace no longer fits in memory.
    b_star = int(np.clip(round(advice["inputs_per_network"].median()), 1, 1024))
    t_alloc, e_alloc = run(b_star)
    return {
        "target_rel_half_width": target,
        "default_batch": exp.batch,
        "default_seconds": t_default,
        "default_networks": e_default.n_networks,
        "suggested_batch": b_star,
        "suggested_seconds": t_alloc,
        "suggested_networks": e_alloc.n_networks,
        "cost_per_network_ms": 1e3 * c_net,
        "cost_per_input_ms": 1e3 * c_in,
        "gain": t_default / t_alloc,
    }


def sweep_speedup(quick: bool) -> dict:
    from deltastats.sweeps import run_sweep

    cfg = {
        "name": "bench_sweep",
        "seed": 0,
        "base": {
            "depth": 10,
            "width": 64,
            "n_networks": 64 if quick else 1024,
            "batch": 16,
            "chunk": 64,
        },
        "grid": {"sigma_w2": [0.8, 1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2]},
    }
    # Three ways to spend the 2 cores on the same 8 points, interleaved over repetitions:
    # --jobs 1 (one core), --jobs 2 (two single-threaded worker processes), and every point in
    # this process with the engine's 2 threads (what --jobs 1 did before it meant one core).
    from deltastats.runner import analyse
    from deltastats.sweeps import load_sweep

    def threads_in_process(folder: Path) -> None:
        for exp in load_sweep(cfg).experiments:
            analyse(exp)

    times: dict[str, list[float]] = {"jobs1": [], "jobs2": [], "threads2": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(1 if quick else 3):
            for key in times:
                folder = Path(tmp) / f"{key}_{rep}"
                t0 = time.perf_counter()
                if key == "threads2":
                    threads_in_process(folder)
                else:
                    run_sweep(cfg, out=folder, jobs=int(key[-1]), progress=False)
                times[key].append(time.perf_counter() - t0)
    out = {f"{k}_seconds": float(np.median(v)) for k, v in times.items()}
    out["runs"] = times
    out["speedup"] = out["jobs1_seconds"] / out["jobs2_seconds"]
    out["speedup_vs_threads"] = out["threads2_seconds"] / out["jobs2_seconds"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument(
        "--networks",
        type=int,
        nargs="+",
        default=None,
        help="network counts for the memory test (default 1e3 1e4 1e5)",
    )
    p.add_argument(
        "--memory-jobs", type=int, default=1, help="n_jobs of estimate in the memory test"
    )
    p.add_argument(
        "--parts",
        nargs="+",
        default=["memory", "precision", "sweep"],
        choices=["memory", "precision", "sweep"],
        help="parts to measure; the others are taken from the last run's JSON",
    )
    args = p.parse_args()
    warnings.simplefilter("ignore")
    store = ROOT / "results" / "benchmarks_scale.json"
    last = json.loads(store.read_text()) if store.exists() else {}
    sizes = args.networks or ([200, 2000] if args.quick else [1_000, 10_000, 100_000])
    if "memory" in args.parts:
        print("memory …", flush=True)
        last["memory"] = memory(sizes, args.memory_jobs)
    if "precision" in args.parts:
        print("time to precision …", flush=True)
        last["precision"] = time_to_precision(args.quick)
        print(f"  {last['precision']}", flush=True)
    if "sweep" in args.parts:
        print("sweep speed-up …", flush=True)
        last["sweep"] = sweep_speedup(args.quick)
        print(f"  {last['sweep']}", flush=True)
    missing = {"memory", "precision", "sweep"} - set(last)
    if missing:
        raise SystemExit(f"no earlier measurement of {sorted(missing)}: run those parts too")
    store.write_text(json.dumps(last, indent=2))
    mem, ttp, sw = last["memory"], last["precision"], last["sweep"]
    lines = [
        "# Scale benchmark",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}. Command: `python "
        f"experiments/benchmarks/bench_scale.py{' --quick' if args.quick else ''}`.",
        "",
        "## Peak memory of `estimate` (width 128, depth 10, B = 4, chunk 64)",
        "",
        "Each size runs in a fresh interpreter. *Main RSS* is the main process's `ru_maxrss`; "
        "*tree peak* is the largest sum of resident memory over the main process and its "
        "worker processes, sampled every 0.2 s (with `n_jobs` = 1 there are none).",
        "",
        "| networks | n_jobs | wall time (s) | main RSS (MB) | tree peak (MB) "
        "| tree peak / smallest's |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for m in mem:
        tree = m.get("tree_peak_mb", m["rss_mb"])
        base = mem[0].get("tree_peak_mb", mem[0]["rss_mb"])
        lines.append(
            f"| {m['n']:,} | {m.get('jobs', 1)} | {m['seconds']:.1f} | {m['rss_mb']:.0f} | "
            f"{tree:.0f} | {tree / base:.2f} |"
        )
    lines += [
        "",
        "## Time to precision (default experiment, `until_rel_error`)",
        "",
        f"Target: every layer's `delta_sq` CI half-width ≤ {ttp['target_rel_half_width']:.0%} "
        "of its value.",
        "",
        "| inputs per network B | networks used | wall time (s) |",
        "|---:|---:|---:|",
        f"| {ttp['default_batch']} (default) | {ttp['default_networks']:,} | "
        f"{ttp['default_seconds']:.1f} |",
        f"| {ttp['suggested_batch']} (`suggest_allocation`) | {ttp['suggested_networks']:,} | "
        f"{ttp['suggested_seconds']:.1f} |",
        "",
        f"Gain from the suggested allocation: **{ttp['gain']:.2f}×** (measured costs: "
        f"{ttp['cost_per_network_ms']:.3f} ms per network, {ttp['cost_per_input_ms']:.4f} ms "
        "per input).",
        "",
        "## Sweep of 8 points, `--jobs 1` vs `--jobs 2`",
        "",
        "`--jobs N` is the number of cores a sweep may use: up to N single-threaded worker "
        "processes, one point each (default: all cores). Medians of "
        f"{len(sw.get('runs', {}).get('jobs1', [0]))} interleaved repetitions:",
        "",
        "| how the 2 cores are used | wall time (s) |",
        "|---|---:|",
        f"| `--jobs 1`: one core | {sw['jobs1_seconds']:.1f} |",
        f"| `--jobs 2`: two single-threaded worker processes | {sw['jobs2_seconds']:.1f} |",
        "| every point in one process, engine and draws on 2 threads "
        f"| {sw.get('threads2_seconds', float('nan')):.1f} |",
        "",
        f"Speed-up of `--jobs 2` over `--jobs 1`: **{sw['speedup']:.2f}×** (target ≥ 1.7×); "
        f"over the threaded single process: {sw.get('speedup_vs_threads', float('nan')):.2f}×.",
        "",
    ]
    path = ROOT / "results" / "benchmarks_scale.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
