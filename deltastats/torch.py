"""PyTorch adapter: the nested-design estimators for δ of any ``torch.nn.Module``.

:func:`estimate` draws M independent networks (``model_fn(seed)``), one batch of B inputs per
network (``data_fn(seed)``), records the per-sample error signals

    δ_b = ∂L_b/∂z_b,    z = the output of each chosen module (:func:`trace`),

and returns the same :class:`~deltastats.Estimates` as :func:`deltastats.estimate` (through
:func:`deltastats.estimate_arrays`, accumulated in float64), with a ``name`` column holding
the module names beside ``layer`` = 1, 2, … in the order given.

**How δ is recorded.** A forward hook on each module registers a tensor hook on its output;
one backward pass of Σ_b L_b then hands every hook ∂(Σ_c L_c)/∂z_b = ∂L_b/∂z_b, because L_c
does not depend on z_b for c ≠ b *when samples do not interact* inside the model. A module
that couples the samples of a batch (BatchNorm in training mode) breaks this: δ is then not
per-sample, and a :class:`SampleCouplingWarning` says so (put such models in ``eval()``
mode, or use LayerNorm/GroupNorm).

**Units.** Each sample's output is flattened in C order: a feature map ``(B, C, H, W)`` has
n = C·H·W units, channel-major (unit j = c·H·W + h·W + w); a sequence ``(B, T, d)`` has T·d.

**Gradients.** For a module with a ``weight`` parameter (Linear, Conv, LayerNorm, …), the
gradient of the batch objective J = (1/B) Σ_b L_b with respect to that weight, any shape,
gives ``grad_w_sq`` = E‖∂J/∂W‖² (N = its number of entries), ``grad_w_mean`` and
``grad_w_var``; for a Linear layer that is the engine's ∂J/∂W⁽ˡ⁾ (weight decay 0).

**Seeds.** Network m calls ``model_fn`` and ``data_fn`` with two different ints drawn from
its own parameter and input streams (:func:`network_seeds`), so network m's numbers do not
depend on how many networks are drawn, and seeding torch with both does not make the
weights and the data share random numbers.

Needs the optional extra ``torch`` (``pip install "deltastats[torch]"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import checks
from .model.seeding import network_rngs
from .stats.accumulators import DEFAULT_BLOCK
from .stats.arrays import ArrayAccumulator
from .stats.intervals import check_method_confidence
from .stats.results import Estimates

__all__ = ["SampleCouplingWarning", "TorchTrace", "estimate", "network_seeds", "trace"]


class SampleCouplingWarning(UserWarning):
    """A module couples the samples of a batch (e.g. BatchNorm in training mode): the recorded
    δ_b is then ∂(Σ_c L_c)/∂z_b, not the per-sample ∂L_b/∂z_b."""


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            'deltastats.torch needs PyTorch: pip install "deltastats[torch]"'
        ) from None
    return torch


def network_seeds(seed: int, m: int) -> tuple[int, int]:
    """``(model_seed, data_seed)`` of network m: 63-bit ints from network m's parameter and
    input streams of ``seed`` (:mod:`deltastats.model.seeding`)."""
    seed = checks.integer("seed", seed, 0)
    m = checks.integer("m", m, 0)
    (p,) = network_rngs(seed, "params", m, 1)
    (x,) = network_rngs(seed, "inputs", m, 1)
    return int(p.integers(2**63)), int(x.integers(2**63))


@dataclass(frozen=True)
class TorchTrace:
    """One network's recorded arrays (float64 numpy), keyed by module name.

    Attributes
    ----------
    delta, z : dict of str → ndarray ``(B, n)``
        δ_b = ∂L_b/∂z_b and z_b, each sample's module output flattened to n units.
    loss : ndarray ``(B,)``
        Per-sample losses.
    grads : dict of str → ndarray
        ∂J/∂W of each module's ``weight`` (its own shape), J = (1/B) Σ_b L_b; modules
        without a weight are absent.
    """

    delta: dict
    z: dict
    loss: np.ndarray
    grads: dict


def _coupling_modules(model) -> list[str]:
    torch = _torch()
    norm = torch.nn.modules.batchnorm._BatchNorm
    return [name for name, mod in model.named_modules() if isinstance(mod, norm) and mod.training]


def _numpy(t) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=_torch().float64).numpy()


def trace(model, x, y, loss_fn: Callable, *, modules: Sequence[str]) -> TorchTrace:
    """Per-sample δ, z, losses and weight gradients of one network on one batch.

    Parameters
    ----------
    model : torch.nn.Module
    x, y : torch.Tensor
        One batch: ``x`` of B samples (first axis), ``y`` what ``loss_fn`` takes beside the
        output.
    loss_fn : callable
        ``loss_fn(output, y)`` → per-sample losses of shape ``(B,)`` (e.g. a torch loss with
        ``reduction="none"``, summed over output axes).
    modules : sequence of str
        Names from ``model.named_modules()`` whose outputs are the z's.

    Returns
    -------
    TorchTrace
    """
    torch = _torch()
    names = _check_modules(model, modules)
    found = dict(model.named_modules())
    z_out: dict = {}
    d_out: dict = {}
    handles = []

    def hook_for(name):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise ValueError(
                    f"modules: {name!r} returns {type(output).__name__}, not one tensor; hook a "
                    "module whose output is a tensor"
                )
            if name in z_out:
                raise ValueError(
                    f"modules: {name!r} is called more than once in one forward pass (a shared "
                    "module); hook one call site"
                )
            # A copy: an in-place op after the module (ReLU(inplace=True)) would overwrite
            # the output; the tensor hook still receives the gradient of the value seen here.
            z_out[name] = output.detach().clone()
            if output.requires_grad:
                output.register_hook(lambda g: d_out.__setitem__(name, g))

        return hook

    try:
        for name in names:
            handles.append(found[name].register_forward_hook(hook_for(name)))
        model.zero_grad(set_to_none=True)
        output = model(x)
        loss = loss_fn(output, y)
        B = int(x.shape[0])
        if not isinstance(loss, torch.Tensor) or tuple(loss.shape) != (B,):
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(
                f"loss_fn must return per-sample losses of shape (B,) = ({B},), got {shape}; "
                "use reduction='none' and sum over the output axes"
            )
        for name in names:
            if name not in z_out:
                raise ValueError(f"modules: {name!r} was not called in the forward pass")
            if tuple(z_out[name].shape[:1]) != (B,):
                raise ValueError(
                    f"modules: {name!r} outputs shape {tuple(z_out[name].shape)}, whose first "
                    f"axis is not the B = {B} samples"
                )
        loss.sum().backward()
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in d_out]
    if missing:
        raise ValueError(f"modules: the loss does not depend on the output of {missing}")
    grads = {}
    for name in names:
        w = getattr(found[name], "weight", None)
        if isinstance(w, torch.Tensor) and w.grad is not None:
            grads[name] = _numpy(w.grad) / B
    return TorchTrace(
        {n: _numpy(d_out[n]).reshape(B, -1) for n in names},
        {n: _numpy(z_out[n]).reshape(B, -1) for n in names},
        _numpy(loss),
        grads,
    )


def _check_modules(model, modules) -> list[str]:
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model_fn must return a torch.nn.Module, got {type(model).__name__}")
    if isinstance(modules, str) or not isinstance(modules, Sequence) or not modules:
        raise ValueError(
            f"modules must be a non-empty list of module names (from named_modules()), got "
            f"{modules!r}"
        )
    names = list(modules)
    if len(set(names)) != len(names):
        raise ValueError(f"modules lists a name twice: {names}")
    found = dict(model.named_modules())
    for name in names:
        if not isinstance(name, str) or name not in found:
            known = [n for n in found if n][:12]
            raise ValueError(
                f"modules: no module named {name!r} in the model; its modules are {known}"
                + (" …" if len(found) > 13 else "")
            )
    return names


def estimate(
    model_fn: Callable,
    data_fn: Callable,
    loss_fn: Callable,
    *,
    n_networks: int,
    modules: Sequence[str],
    seed: int = 0,
    device: str = "cpu",
    method: str = "clt",
    confidence: float = 0.95,
    progress: bool = True,
) -> Estimates:
    """Estimates with network-level intervals of δ at chosen modules of random torch models.

    Parameters
    ----------
    model_fn : callable
        ``model_fn(seed)`` → a fresh random ``torch.nn.Module`` (seed torch with it, e.g.
        ``torch.manual_seed(seed)``, or a ``torch.Generator``).
    data_fn : callable
        ``data_fn(seed)`` → ``(x, y)``, one network's batch of B samples.
    loss_fn : callable
        ``loss_fn(output, y)`` → per-sample losses ``(B,)``.
    n_networks : int
        M ≥ 2 independent networks.
    modules : sequence of str
        Names from ``named_modules()`` whose outputs are the z's; ``layer`` numbers them
        1, 2, … in this order and the ``name`` column holds the names.
    seed : int
        Root seed; network m uses :func:`network_seeds` (seed, m).
    device : str
        ``"cpu"`` or ``"cuda"`` (``"cuda:1"``, …): where the model and the batch run.
    method : {"clt", "jackknife", "bootstrap"}
    confidence : float
        γ ∈ (0, 1).
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    Estimates
        As :func:`deltastats.estimate_arrays` with ``delta``, ``z``, ``loss`` and the weight
        gradients of the modules.
    """
    torch = _torch()
    M = checks.integer(
        "n_networks", n_networks, 2, " (an interval needs the spread of at least 2 networks)"
    )
    seed = checks.integer("seed", seed, 0)
    check_method_confidence(method, confidence)
    for name, fn in (("model_fn", model_fn), ("data_fn", data_fn), ("loss_fn", loss_fn)):
        if not callable(fn):
            raise ValueError(f"{name} must be callable, got {type(fn).__name__}")
    if not isinstance(device, str):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda', got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu' or 'cuda[:k]', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu'")
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    acc = ArrayAccumulator(keep_networks=method == "bootstrap")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=M, unit="net", desc="deltastats.torch")
    chunk: list[TorchTrace] = []
    warned = False
    try:
        for m in range(M):
            model_seed, data_seed = network_seeds(seed, m)
            model = model_fn(model_seed)
            names = _check_modules(model, modules)
            coupled = _coupling_modules(model)
            if coupled and not warned:
                warned = True
                warnings.warn(
                    f"modules {coupled} (BatchNorm in training mode) couple the samples of a "
                    "batch: the recorded δ_b is not the per-sample ∂L_b/∂z_b; call "
                    "model.eval() in model_fn or use LayerNorm/GroupNorm",
                    SampleCouplingWarning,
                    stacklevel=2,
                )
            batch = data_fn(data_seed)
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                raise ValueError(f"data_fn must return (x, y), got {type(batch).__name__}")
            x, y = (t.to(dev) if isinstance(t, torch.Tensor) else t for t in batch)
            chunk.append(trace(model.to(dev), x, y, loss_fn, modules=names))
            if len(chunk) == DEFAULT_BLOCK or m == M - 1:
                _feed(acc, chunk, names)
                chunk = []
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return acc.result(method=method, confidence=confidence)


def _feed(acc: ArrayAccumulator, traces: list[TorchTrace], names: list[str]) -> None:
    """Stack the networks of a chunk and add them (shapes are checked by the accumulator)."""
    Bs = {t.loss.shape[0] for t in traces}
    if len(Bs) != 1 or (acc.layout is not None and Bs != {acc.batch}):
        raise ValueError(f"data_fn must give every network the same batch size B, got {Bs}")

    def stack(arrays, what):
        if len({a.shape for a in arrays}) != 1:
            raise ValueError(
                f"model_fn must build one architecture: {what} has shapes "
                f"{sorted({a.shape for a in arrays})} across networks"
            )
        return np.stack(arrays)

    with_grad = [n for n in names if all(n in t.grads for t in traces)]
    acc.update(
        delta={n: stack([t.delta[n] for t in traces], f"δ of {n!r}") for n in names},
        z={n: stack([t.z[n] for t in traces], f"the output of {n!r}") for n in names},
        loss=np.stack([t.loss for t in traces]),
        grads={n: stack([t.grads[n] for t in traces], f"the weight of {n!r}") for n in with_grad}
        or None,
    )
