"""Speed of the backprop engine against its floor, the machine, autograd frameworks and a loop.

Run (from the repository root)::

    python experiments/benchmarks/bench_engine.py            # full: widths 32, 128, 512
    python experiments/benchmarks/bench_engine.py --quick    # widths 32, 128, fewer repetitions

Workload (the same for every contender): M = 256 random tanh networks (fewer at width
512, see ``--max-weights-gb``) of depth L = 10 and
constant width n (widths ``(n,) * 11``, linear output), B = 64 inputs per network (one batch
per network), loss ½‖g − y‖² per sample, forward pass plus δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾ of every layer
(no weight gradients), in float64 and float32.

FLOPs are counted as matmul FLOPs only, 2·M·B·n_in·n_out per matmul: L forward matmuls and
L − 1 backward matmuls (δ⁽¹⁾ needs no product with W⁽¹⁾), i.e. 2·M·B·n²·(2L − 1). Element-wise
work (tanh, φ', bias) is not counted, so every rate is "useful matmul FLOPs per second".

Contenders, timed in the same run and interleaved repetition by repetition (so load from
other jobs hits all of them alike), each timed call right after an untimed call of the same
contender (the steady state of a streaming loop, see :func:`time_interleaved`); reported as
median GFLOP/s with the min–max over repetitions and as ratios:

(a) ``deltastats.backprop(..., grads=False)`` (keeps z, h and δ of every layer, the default),
    (a') with ``keep_layers=()`` (δ only, what the runner asks for), (a'') keeping all but
    passing the previous trace as ``out=`` (no fresh memory to page in: a streaming loop),
    (a‴) δ only with the compiled one-pass kernels switched to the other setting than this
    machine's default (``engine.USE_COMPILED_KERNELS``), which shows what the kernels gain;
(b) the engine's bare matmuls: the same 2L − 1 stacked matmul calls per chunk (with the
    engine's forward layout and row splits, see ``forward_layouts``), same thread split, no
    element-wise work — the floor the engine can reach; also the same matmuls as whole-stack
    numpy ``matmul`` calls with multi-threaded BLAS (the pre-threading engine);
(c) one large square GEMM with the same FLOP count (multi-threaded BLAS): the machine's rate;
(d) PyTorch autograd with ``bmm`` (``baddbmm`` forward, ``retain_grad`` for δ; z⁽¹⁾ is made a
    leaf so autograd does not compute an input gradient nobody asked for), when installed;
(e) JAX ``jit(vmap(grad))`` with respect to zero perturbations of every z (the gradient with
    respect to a perturbation of z⁽ˡ⁾ is δ⁽ˡ⁾), when installed;
(f) a per-network Python loop of 2-D numpy matmuls (multi-threaded BLAS).

Every contender's δ⁽¹⁾ (the deepest backpropagated one) is compared with the engine's as a
check that all compute the same thing. Writes ``results/benchmarks.md`` and prints it.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import deltastats as ds  # noqa: E402
from deltastats import engine as _engine  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_arrays import cpu_model  # noqa: E402  (the benchmarks' one CPU probe)
from bench_rng import cpu_flags  # noqa: E402

DEPTH = 10
NETWORKS = 256
BATCH = 64
SIGMA_W, SIGMA_B = 1.0, 0.1
BARE = "(b) engine's bare matmuls"
TORCH, TORCH1 = "(d) PyTorch autograd (bmm)", "(d') PyTorch autograd, 1 thread"
#: The engine's speed-up over PyTorch autograd (the faster of d and d') the issue asks for.
TORCH_TARGET = 1.2


# ---- workload --------------------------------------------------------------------------------
def make_workload(width: int, dtype, M: int, B: int, L: int, seed: int = 0):
    """Spec, parameters, inputs and targets for one (width, dtype) cell.

    Parameters are drawn directly in bulk (W ~ N(0, σ_w²/n), b ~ N(0, σ_b²)), the law of
    ``MLP.sample``; per-network streams would only make the set-up slow at width 512.
    """
    net = ds.MLP((width,) * (L + 1), activation="tanh", sigma_w=SIGMA_W, sigma_b=SIGMA_B)
    rng = np.random.default_rng(seed)
    weights = tuple(
        (rng.standard_normal((M, width, width)) * (SIGMA_W / np.sqrt(width))).astype(dtype)
        for _ in range(L)
    )
    biases = tuple((rng.standard_normal((M, width)) * SIGMA_B).astype(dtype) for _ in range(L))
    x = rng.standard_normal((M, B, width)).astype(dtype)
    y = rng.standard_normal((M, B, width)).astype(dtype)
    return net, ds.Params(weights, biases), x, y


def matmul_flops(M: int, B: int, width: int, L: int) -> float:
    """2·M·B·n_in·n_out per matmul; L forward + (L − 1) backward matmuls."""
    return 2.0 * M * B * width * width * (2 * L - 1)


# ---- contenders ------------------------------------------------------------------------------
def engine_runner(net, params, x, y, reuse: bool = False, **kw) -> Callable[[], np.ndarray]:
    """``backprop(grads=False)``; with ``reuse`` each call passes the previous trace as ``out``."""
    state = {}

    def run():
        trace = ds.backprop(net, params, x, y, grads=False, out=state.get("out"), **kw)
        if reuse:
            state["out"] = trace
        return trace.delta[0]

    return run


def toggled_kernels_runner(net, params, x, y) -> Callable[[], np.ndarray]:
    """``keep_layers=()`` with the engine's compiled kernels switched to the other setting than
    this machine's default (numpy's element-wise passes where the kernels are on by default)."""

    def run():
        default = _engine.USE_COMPILED_KERNELS
        _engine.USE_COMPILED_KERNELS = not default
        try:
            trace = ds.backprop(net, params, x, y, grads=False, keep_layers=())
        finally:
            _engine.USE_COMPILED_KERNELS = default
        return trace.delta[0]

    return run


TOGGLED = "(a‴) engine, δ only, " + (
    "numpy element-wise (kernels off)" if _engine.USE_COMPILED_KERNELS else "compiled kernels on"
)


def bare_matmuls_runner(params, x) -> Callable[[], None]:
    """The engine's matmul calls only: same chunks, same threads, single-threaded BLAS."""
    W = params.weights
    M, B, n = x.shape
    widths = (n,) * (len(W) + 1)
    chunk, n_threads = _engine.passes._plan(M, B, widths, None, None)
    tasks = [slice(m0, min(m0 + chunk, M)) for m0 in range(0, M, chunk)]
    local = __import__("threading").local()

    forward = _engine.passes._forward_layout(B, n, n, x.dtype)
    back_rows = _engine.passes._row_blocks(B, n, n)

    def one(s):
        bufs = local.__dict__.setdefault("bufs", {})
        c = s.stop - s.start

        def work(key, shape):  # the engine's per-thread scratch arrays, (chunk, *shape)
            if key not in bufs:
                bufs[key] = np.empty((chunk, *shape), x.dtype)
            return bufs[key][:c]

        a, b = work("a", (B, n)), work("b", (B, n))
        h = x[s]
        for l in range(len(W)):
            out = a if l % 2 == 0 else b
            _engine.passes._forward_product(forward, h, W[l][s], out, work)
            h = out
        for l in range(len(W) - 2, -1, -1):
            out = a if h is b else b
            _engine.passes._matmul_rows(h, W[l + 1][s], out, back_rows)
            h = out

    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None

    def run():
        with threadpool_limits(1, user_api="blas"):
            if pool is None:
                for s in tasks:
                    one(s)
            else:
                list(pool.map(one, tasks))

    return run


def stacked_matmuls_runner(params, x) -> Callable[[], None]:
    """The same matmuls as whole-stack numpy calls, multi-threaded BLAS (the old engine)."""
    W = params.weights
    a, b = np.empty_like(x), np.empty_like(x)

    def run():
        h = x
        for l in range(len(W)):
            out = a if l % 2 == 0 else b
            np.matmul(h, W[l].swapaxes(-1, -2), out=out)
            h = out
        for l in range(len(W) - 2, -1, -1):
            out = a if h is b else b
            np.matmul(h, W[l + 1], out=out)
            h = out

    return run


def gemm_runner(flops: float, dtype) -> tuple[Callable[[], None], float]:
    """One square N×N GEMM with 2N³ ≈ ``flops``; returns the runner and its exact FLOPs."""
    N = max(1, round((flops / 2.0) ** (1.0 / 3.0)))
    rng = np.random.default_rng(1)
    A = rng.standard_normal((N, N)).astype(dtype)
    Bm = rng.standard_normal((N, N)).astype(dtype)
    C = np.empty((N, N), dtype=dtype)

    def run():
        np.matmul(A, Bm, out=C)

    return run, 2.0 * N**3


def loop_runner(params, x, y) -> Callable[[], np.ndarray]:
    """One network at a time, 2-D matmuls (samples as rows), same arithmetic as the engine."""
    W, b = params.weights, params.biases
    L = len(W)

    def run():
        out = np.empty_like(x)
        for m in range(x.shape[0]):
            h, hs = x[m], []
            for l in range(L):
                z = h @ W[l][m].T
                z += b[l][m]
                h = np.tanh(z) if l < L - 1 else z
                hs.append(h)
            d = h - y[m]
            for l in range(L - 2, -1, -1):
                d = (d @ W[l + 1][m]) * (1.0 - hs[l] * hs[l])
            out[m] = d
        return out

    return run


def torch_runner(params, x, y, threads: int):
    try:
        import torch
    except ImportError:
        return None, None
    W = [torch.from_numpy(w) for w in params.weights]  # shares memory, no copy
    bias = [torch.from_numpy(b).unsqueeze(1) for b in params.biases]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    L = len(W)

    def run():
        torch.set_num_threads(threads)  # two runners with different thread counts alternate
        h, zs = xt, []
        for l in range(L):
            z = torch.baddbmm(bias[l], h, W[l].transpose(1, 2))
            if l == 0:
                z = z.detach().requires_grad_()  # δ⁽¹⁾ is wanted, ∂L/∂x is not
            else:
                z.retain_grad()
            zs.append(z)
            h = torch.tanh(z) if l < L - 1 else z
        (0.5 * ((h - yt) ** 2).sum()).backward()
        return zs[0].grad.numpy()

    return run, f"torch {torch.__version__}"


def jax_runner(params, x, y):
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None, None
    jax.config.update("jax_enable_x64", True)
    L = len(params.weights)
    W = [jnp.asarray(w) for w in params.weights]
    bias = [jnp.asarray(b) for b in params.biases]
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    zeros = [jnp.zeros_like(xj) for _ in range(L)]

    def loss_one(es, Ws, bs, xm, ym):
        # z⁽ˡ⁾ + e⁽ˡ⁾ with e = 0: ∂loss/∂e⁽ˡ⁾ is δ⁽ˡ⁾ summed over nothing (samples are rows).
        h = xm
        for l in range(L):
            z = h @ Ws[l].T + bs[l] + es[l]
            h = jnp.tanh(z) if l < L - 1 else z
        return 0.5 * jnp.sum((h - ym) ** 2)

    f = jax.jit(jax.vmap(jax.grad(loss_one)))

    def run():
        d = f(zeros, W, bias, xj, yj)
        d[0].block_until_ready()
        return np.asarray(d[0])

    return run, f"jax {jax.__version__}"


# ---- timing ----------------------------------------------------------------------------------
#: Untimed calls of a contender right before each of its timed calls (see time_interleaved).
WARM_CALLS = 1


def time_interleaved(runners: dict, reps: int) -> dict[str, np.ndarray]:
    """Wall times per contender; one warm-up call each, then ``reps`` interleaved rounds.

    In each round every contender makes :data:`WARM_CALLS` untimed calls and then the timed
    one, so each time is that of a call in a streaming loop (its thread pools awake, its
    memory in cache), which is how a sampler calls the engine. Timing the first call after
    another contender instead measures waking up: on 2 shared cores of a Zen 4 the engine's
    δ pass at width 32 (float32) took 15 ms back to back but 21–23 ms right after a PyTorch
    call, a per-network loop or a 0.2 s pause. Every contender is timed the same way."""
    for run in runners.values():
        run()
    times = {k: [] for k in runners}
    for _ in range(reps):
        for k, run in runners.items():
            gc.collect()
            for _ in range(WARM_CALLS):
                run()
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    return {k: np.asarray(v) for k, v in times.items()}


def rel_diff(a, ref) -> float:
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def networks_for(width: int, args) -> int:
    """M, capped so one float64 copy of the weights stays under ``--max-weights-gb``.

    Some contenders copy the weights (JAX) or keep traces alive, and the machine is shared:
    at width 512, 256 float64 networks of depth 10 are 5.4 GB of weights. Every contender
    sees the same M; the per-network work (what the rates measure) is unchanged.
    """
    per_network = args.depth * width * width * 8
    cap = int(args.max_weights_gb * 1e9 // per_network)
    return max(1, min(args.networks, cap // 8 * 8 if cap >= 8 else cap))


def bench_cell(width: int, dtype, args, cpus: int) -> dict:
    """All contenders for one (width, dtype); returns rows of name → stats."""
    M, B, L = networks_for(width, args), args.batch, args.depth
    net, params, x, y = make_workload(width, dtype, M, B, L)
    flops = matmul_flops(M, B, width, L)
    runners: dict[str, Callable] = {}
    work: dict[str, float] = {}
    runners["(a) engine backprop"] = engine_runner(net, params, x, y)
    runners["(a') engine, δ only"] = engine_runner(net, params, x, y, keep_layers=())
    runners["(a'') engine, out= reused"] = engine_runner(net, params, x, y, reuse=True)
    runners[TOGGLED] = toggled_kernels_runner(net, params, x, y)
    runners[BARE] = bare_matmuls_runner(params, x)
    runners["(b') numpy stacked matmuls"] = stacked_matmuls_runner(params, x)
    gemm, gemm_flops = gemm_runner(flops, dtype)
    runners["(c) one large GEMM"] = gemm
    work["(c) one large GEMM"] = gemm_flops
    versions = {}
    if not args.no_torch:
        run, v = torch_runner(params, x, y, cpus)
        if run is not None:
            runners[TORCH] = run
            versions["torch"] = v
            if cpus > 1:
                # On a shared machine torch's OpenMP threads can lose more to a busy core
                # than they gain: one thread is timed too, and the faster one is the rival.
                runners[TORCH1] = torch_runner(params, x, y, 1)[0]
    if not args.no_jax:
        run, v = jax_runner(params, x, y)
        if run is not None:
            runners["(e) JAX jit(vmap(grad))"] = run
            versions["jax"] = v
    if not args.no_loop:
        runners["(f) per-network loop"] = loop_runner(params, x, y)

    # Same answer from everyone (δ⁽¹⁾, the deepest backpropagated signal).
    ref = runners["(a) engine backprop"]()
    checks = {}
    for k in (TORCH, TORCH1, "(e) JAX jit(vmap(grad))", "(f) per-network loop"):
        if k in runners:
            checks[k] = rel_diff(runners[k](), ref)
    checks["(a') engine, δ only"] = rel_diff(runners["(a') engine, δ only"](), ref)
    checks[TOGGLED] = rel_diff(runners[TOGGLED](), ref)

    times = time_interleaved(runners, args.reps)
    rows = {}
    for k, t in times.items():
        f = work.get(k, flops)
        rate = f / t / 1e9
        rows[k] = {
            "ms": 1e3 * float(np.median(t)),
            "gflops": float(np.median(rate)),
            "lo": float(rate.min()),
            "hi": float(rate.max()),
            "check": checks.get(k),
        }
    del runners, params, x, y
    gc.collect()
    return {"rows": rows, "flops": flops, "versions": versions, "M": M}


# ---- report ----------------------------------------------------------------------------------
def kernels_chosen() -> str:
    """The engine's choices on this machine: compiled element-wise kernels or numpy's passes,
    numpy's tanh (SIMD or per element), the BLAS kernel family and its small-GEMM row split."""
    from deltastats._parallel import blas_is_avx512

    tanh = "SIMD" if _engine.kernels.numpy_vectorizes_tanh() else "per element"
    arch = sorted(
        {str(i.get("architecture")) for i in threadpool_info() if i.get("user_api") == "blas"}
    )
    return (
        f"engine.USE_COMPILED_KERNELS = {_engine.USE_COMPILED_KERNELS} (numpy's float64 tanh: "
        f"{tanh}); BLAS kernels {', '.join(arch) or 'unknown'}, backward row split "
        f"{'on' if blas_is_avx512() else 'off'} (AVX-512 small-GEMM path); forward product "
        f"z = h Wᵀ at B = {BATCH}: {forward_layouts()}"
    )


def forward_layouts() -> str:
    """The engine's call for the forward product per width and dtype (passes._forward_layout:
    direct h Wᵀ, a Wᵀ copy for the untransposed product, or zᵀ = W hᵀ copied into z)."""
    cells = []
    for dtype in ("float64", "float32"):
        for n in (32, 128, 512):
            layout, k = _engine.passes._forward_layout(BATCH, n, n, dtype)
            cells.append(f"{dtype} n={n} {layout}" + (f" ({k} row blocks)" if k > 1 else ""))
    return ", ".join(cells)


def render(results: dict, args, cpus: int, elapsed: float) -> str:
    blas = [
        f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    versions = {}
    for cell in results.values():
        versions.update(cell["versions"])
    quick = " --quick" if args.quick else ""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [
        "# Engine benchmark",
        "",
        f"Generated by `python experiments/benchmarks/bench_engine.py{quick}` on {stamp}"
        f" ({elapsed:.0f} s).",
        "",
        f"- CPU: {cpu_model()} ({cpu_flags()}); kernels: {kernels_chosen()}.",
        f"- Machine: {platform.machine()}, {cpus} usable CPUs, Python {platform.python_version()},"
        f" numpy {np.__version__}, BLAS: {'; '.join(blas) or 'unknown'}"
        + (f", {', '.join(versions.values())}" if versions else "")
        + ".",
        f"- Workload: M = {args.networks} tanh networks × B = {args.batch} inputs each, depth "
        f"L = {args.depth}, constant width n, linear output, loss ½‖g − y‖²; forward + δ of every "
        "layer (no weight gradients).",
        f"- M is capped so the float64 weights take ≤ {args.max_weights_gb:g} GB (shared "
        "machine; JAX copies them): see the last row of each table.",
        "- FLOPs: matmul FLOPs only, 2·M·B·n² per matmul × (L forward + L − 1 backward).",
        f"- {args.reps} interleaved repetitions after one warm-up, each timed call right after "
        f"{WARM_CALLS} untimed call(s) of the same contender (a streaming loop's steady state); "
        "GFLOP/s median [min–max]; "
        "ratio = median rate / median rate of the one large GEMM of the same FLOP count.",
        "- check = max |δ⁽¹⁾ − δ⁽¹⁾_engine| / max |δ⁽¹⁾_engine|.",
        "",
    ]
    for dtype in args.dtypes:
        cells = {w: results[(w, dtype)] for w in args.widths if (w, dtype) in results}
        if not cells:
            continue
        lines += [f"## {dtype}", ""]
        header = "| contender | " + " | ".join(f"n = {w}" for w in cells) + " |"
        lines += [header, "|---|" + "---|" * len(cells)]
        names = list(next(iter(cells.values()))["rows"])
        for name in names:
            cols = []
            for cell in cells.values():
                r = cell["rows"].get(name)
                if r is None:
                    cols.append("—")
                    continue
                gemm = cell["rows"]["(c) one large GEMM"]["gflops"]
                s = f"{r['gflops']:.1f} [{r['lo']:.1f}–{r['hi']:.1f}] · {r['gflops'] / gemm:.2f}"
                if r["check"] is not None:
                    s += f" · check {r['check']:.0e}"
                cols.append(s)
            lines.append(f"| {name} | " + " | ".join(cols) + " |")
        ms = " | ".join(
            f"M = {c['M']}: {c['rows']['(a) engine backprop']['ms']:.1f} ms, "
            f"{c['flops'] / 1e9:.2f} GFLOP"
            for c in cells.values()
        )
        lines += [f"| networks; engine time per pass; work | {ms} |", ""]
        ratio_lines = []
        for w, cell in cells.items():
            r = cell["rows"]
            eng = r["(a) engine backprop"]["gflops"]
            parts = [
                f"engine/GEMM {eng / r['(c) one large GEMM']['gflops']:.2f}",
                f"engine/bare matmuls {eng / r[BARE]['gflops']:.2f}",
            ]
            for k, label in (
                (TORCH, "torch"),
                (TORCH1, "torch 1 thread"),
                ("(e) JAX jit(vmap(grad))", "JAX"),
                ("(f) per-network loop", "loop"),
                ("(b') numpy stacked matmuls", "stacked matmuls"),
            ):
                if k in r:
                    parts.append(f"engine/{label} {eng / r[k]['gflops']:.2f}")
            ratio_lines.append(f"- n = {w}: " + ", ".join(parts))
        lines += ratio_lines + [""]
    lines += [
        "## Targets (issue 6, float64)",
        "",
        "At n = 128 the engine ≥ PyTorch autograd and ≥ 0.5 × the GEMM rate; at n = 512 ≥ 0.7 ×.",
        "Judged for each engine row: (a) is the default call, (a') what the runner asks for,",
        "(a'') a streaming loop that passes the previous trace as `out=`.",
        "",
    ]
    engines = ("(a) engine backprop", "(a') engine, δ only", "(a'') engine, out= reused")
    for w, need_gemm, need_torch in ((128, 0.5, True), (512, 0.7, False)):
        cell = results.get((w, "float64"))
        if cell is None:
            lines.append(f"- n = {w}: not measured in this run")
            continue
        r = cell["rows"]
        for name in engines:
            eng = r[name]["gflops"]
            ratio = eng / r["(c) one large GEMM"]["gflops"]
            verdict = "met" if ratio >= need_gemm else "NOT met"
            s = f"- n = {w}, {name}: engine/GEMM = {ratio:.2f} (≥ {need_gemm}): {verdict}"
            if need_torch:
                tk = TORCH
                if tk in r:
                    tr = eng / r[tk]["gflops"]
                    s += f"; engine/PyTorch = {tr:.2f} (≥ 1): {'met' if tr >= 1 else 'NOT met'}"
                else:
                    s += "; PyTorch not installed"
            lines.append(s)
    lines += [
        "",
        f"## Target (performance issue): engine ≥ {TORCH_TARGET}× PyTorch autograd",
        "",
        "Rate of (a) the default call and (a') δ only over the faster of (d) and (d') in the "
        "same run.",
        "",
    ]
    for dtype in args.dtypes:
        for w in args.widths:
            cell = results.get((w, dtype))
            if cell is None or TORCH not in cell["rows"]:
                continue
            r = cell["rows"]
            rival = max(r[k]["gflops"] for k in (TORCH, TORCH1) if k in r)
            parts = []
            for name in ("(a) engine backprop", "(a') engine, δ only"):
                ratio = r[name]["gflops"] / rival
                verdict = "met" if ratio >= TORCH_TARGET else "NOT met"
                parts.append(f"{name.split(' ')[0]} {ratio:.2f}× ({verdict})")
            lines.append(f"- {dtype}, n = {w}: " + "; ".join(parts))
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="widths 32, 128; 3 repetitions")
    parser.add_argument("--widths", type=int, nargs="+", default=None)
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5, quick 3)")
    parser.add_argument("--networks", type=int, default=NETWORKS)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--depth", type=int, default=DEPTH)
    parser.add_argument(
        "--max-weights-gb",
        type=float,
        default=1.5,
        help="cap M so the float64 weights take at most this much memory (default 1.5)",
    )
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--no-loop", action="store_true")
    parser.add_argument("--output", default=str(ROOT / "results" / "benchmarks.md"))
    args = parser.parse_args(argv)
    if args.widths is None:
        args.widths = [32, 128] if args.quick else [32, 128, 512]
    if args.reps is None:
        args.reps = 3 if args.quick else 5
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    results = {}
    for dtype in args.dtypes:
        for width in args.widths:
            print(f"… {dtype} n = {width}", file=sys.stderr, flush=True)
            results[(width, dtype)] = bench_cell(width, np.dtype(dtype), args, cpus)
    text = render(results, args, cpus, time.perf_counter() - t0)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
