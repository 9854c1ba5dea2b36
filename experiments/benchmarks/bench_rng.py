"""Time per Gaussian value: numpy's ``Generator.standard_normal`` against deltastats'
counter-based generator (:mod:`deltastats.model.philox`).

Run (from the repository root)::

    python experiments/benchmarks/bench_rng.py          # 164k and 10⁷ values, 15 repeats
    python experiments/benchmarks/bench_rng.py --quick  # 3 repeats

Contenders, each filling a preallocated array in place: numpy ``Generator(PCG64)``
``standard_normal(out=…, dtype=…)`` (ziggurat, one thread) in float64 and float32, and
``philox_normal`` (Philox4x32-10 + Box–Muller) in its float64 and float32 laws with 1 and 2
threads. Sizes: 163 840 values (the weights of one width-128, depth-10 network) and 10⁷.
Timed interleaved (each repeat runs every contender once, so a busy neighbour slows all of
them alike), after a warm-up, each timed call right after an untimed call of the same
contender (a loop of draws; see ``bench_engine.time_interleaved``); the table gives the
median ns per value, the speed-up over numpy in the same dtype (medians), and the fastest
repeat, which shows what a contender does when no neighbour holds a CPU (on a shared machine
the two-thread medians depend on how busy the second CPU is). Target: ≥ 5× numpy with 2
threads in both dtypes. Writes ``results/benchmarks_rng.md`` and prints it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

import numba
import numpy as np

import deltastats as ds
from deltastats.model.philox import philox_normal

sys.path.insert(0, str(Path(__file__).parent))
from bench_arrays import cpu_model, usable_cpus  # noqa: E402  (the benchmarks' one CPU probe)

ROOT = Path(__file__).resolve().parents[2]
SIZES = (128 * 128 * 10, 10_000_000)


def cpu_flags() -> str:
    """The vector extensions the kernel lists (Linux), e.g. ``avx2 avx512f avx512dq``."""
    wanted = ("avx2", "fma", "avx512f", "avx512dq", "avx512vl")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return " ".join(w for w in wanted if w in have) or "none of " + str(wanted)
    except OSError:
        pass
    return "unknown"


def contenders(n: int) -> dict:
    """name → (dtype, a function filling its own preallocated array of n values)."""
    gen = np.random.Generator(np.random.PCG64(0))
    out = {}
    for dtype in (np.float64, np.float32):
        buf = np.empty(n, dtype=dtype)
        name = np.dtype(dtype).name
        out[f"numpy {name}"] = (name, lambda b=buf, d=dtype: gen.standard_normal(out=b, dtype=d))
        for threads in (1, 2):
            out[f"philox {name}, {threads} thread{'s' * (threads > 1)}"] = (
                name,
                lambda b=buf, d=dtype, t=threads: philox_normal(
                    7, (1, 2, 3), n, d, out=b, threads=t
                ),
            )
    return out


def bench(n: int, repeats: int) -> dict:
    """(dtype, median seconds, fastest seconds) of each contender over interleaved repeats."""
    runs = contenders(n)
    for _, f in runs.values():  # warm-up: compiled kernels, thread pool, page faults
        f()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (_, f) in runs.items():
            # One untimed call first: the timed one is a call in a loop of draws (its pool
            # thread awake), not the wake-up after another contender; the same for all.
            f()
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    return {name: (runs[name][0], float(np.median(t)), min(t)) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    """Time every contender at each size and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats")
    parser.add_argument("--output", default=str(ROOT / "results" / "benchmarks_rng.md"))
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 15
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows, worst = [], {}
    for n in SIZES:
        result = bench(n, repeats)
        base = {dt: t for name, (dt, t, _) in result.items() if name.startswith("numpy")}
        for name, (dt, t, best) in result.items():
            ratio = base[dt] / t
            rows.append(
                f"| {n:,} | {name} | {t / n * 1e9:.2f} | {ratio:.2f}× | {best / n * 1e9:.2f} |"
            )
            if name.endswith("2 threads"):
                worst[(n, dt)] = ratio
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ok = all(r >= 5 for r in worst.values())
    text = "\n".join(
        [
            "# Gaussian numbers: numpy `standard_normal` vs counter-based Philox",
            "",
            f"CPU: {cpu_model()} ({cpu_flags()}), {usable_cpus()} usable CPUs; "
            f"{_dt.date.today().isoformat()}; deltastats {ds.__version__}, numpy "
            f"{np.__version__}, numba {numba.__version__}.",
            f"Median of {repeats} interleaved repeats; 1-minute load average "
            f"{load0:.1f} before, {load1:.1f} after (other processes share the CPUs).",
            "Speed-up: numpy's time per value in the same dtype over this one. "
            f"Target ≥ 5× with 2 threads: {'met' if ok else 'NOT met'} "
            # Two decimals: a ratio of 4.97 must not read as "5.0×, NOT met".
            f"(lowest {min(worst.values()):.2f}×).",
            "",
            "| values | generator | ns / value | speed-up vs numpy | fastest repeat, ns / value |",
            "|---:|---|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
