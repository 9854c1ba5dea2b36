"""Experiment configuration: one frozen record that says everything a run needs.

A config is written as a flat TOML table (or a dict) whose keys are the fields of
:class:`Experiment`; unknown keys are rejected with the closest valid key suggested, so a typo
never silently falls back to a default. ``Experiment.build()`` turns it into the objects the
engine takes (``MLP``, input law, target law).

Example TOML::

    name = "tanh-critical"
    width = 256
    depth = 10
    activation = "tanh"
    sigma_w = 1.3      # σ_w (not σ_w²)
    n_networks = 200
    batch = 32
"""

from __future__ import annotations

import dataclasses
import difflib
import numbers
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model import inputs as inputs_mod
from ..model import targets as targets_mod
from ..model.activations import get_activation
from ..model.losses import get_loss
from ..model.networks import INITS, MLP
from ..stats.design import check_memory


@dataclass(frozen=True)
class Experiment:
    """A Monte Carlo experiment on random MLPs.

    Parameters
    ----------
    name : str
        Used for the results folder ``results/<name>/``.
    width, depth, input_width, output_width : int
        Widths ``(input_width, width × (depth−1), output_width)`` unless ``widths`` is given.
    widths : tuple of int or None
        Explicit ``(n_0, …, n_L)``; overrides width/depth/input_width/output_width.
    activation, output_activation : str
        Registry names (``deltastats list`` shows them).
    sigma_w, sigma_b, mu_w, mu_b : float
        Weight/bias law (DESIGN.md): W_ij ~ N(μ_w/n_in, σ_w²/n_in), b ~ N(μ_b, σ_b²).
    init : str
        One of :data:`deltastats.INITS`.
    inputs : str
        ``"gaussian"``, ``"sphere"`` or ``"uniform"``; ``q0`` sets E‖x‖²/n₀ for the first two.
    targets : str
        ``"zeros"``, ``"constant"`` (value ``target_value``), ``"gaussian"`` (std
        ``target_value``) or ``"one_hot"`` (n_classes = output width).
    loss : str
        ``"mse"`` or ``"cross_entropy"``.
    n_networks, batch : int
        M networks, B inputs per network (drawn per network).
    chunk : int
        Networks per engine call (memory knob; results do not depend on it).
    seed : int
    dtype : str
        ``"float64"`` or ``"float32"`` (engine precision; statistics accumulate in float64).
    weight_decay : float
        λ in the weight gradients.
    """

    name: str = "default"
    width: int = 128
    depth: int = 10
    input_width: int | None = None
    output_width: int = 1
    widths: tuple[int, ...] | None = None
    activation: str = "tanh"
    output_activation: str = "linear"
    sigma_w: float = field(default_factory=lambda: float(np.sqrt(1.5)))
    sigma_b: float = 0.0
    mu_w: float = 0.0
    mu_b: float = 0.0
    init: str = "gaussian"
    inputs: str = "gaussian"
    q0: float = 1.0
    targets: str = "zeros"
    target_value: float = 0.0
    loss: str = "mse"
    n_networks: int = 256
    batch: int = 64
    chunk: int = 64
    seed: int = 0
    dtype: str = "float64"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_folder_name("name", self.name)
        for key in ("width", "depth", "output_width", "n_networks", "batch", "chunk"):
            _positive_int(key, getattr(self, key))
        if self.input_width is not None:
            _positive_int("input_width", self.input_width)
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        for key in ("sigma_w", "sigma_b", "mu_w", "mu_b", "q0", "target_value", "weight_decay"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
                raise ValueError(f"{key} must be a finite number, got {v!r}")
        for key in ("sigma_w", "sigma_b", "weight_decay"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)!r}")
        if self.widths is not None:
            if isinstance(self.widths, str | bytes | dict) or not isinstance(
                self.widths, list | tuple
            ):
                raise ValueError(f"widths must be a list of ints, got {self.widths!r}")
            for w in self.widths:
                _positive_int("widths entries", w)
            object.__setattr__(self, "widths", tuple(self.widths))
        for key in ("activation", "output_activation", "loss", "init", "inputs", "targets"):
            if not isinstance(getattr(self, key), str):
                raise ValueError(f"{key} must be a name (a string), got {getattr(self, key)!r}")
        for key, valid in (("inputs", inputs_mod.INPUT_LAWS), ("targets", targets_mod.TARGET_LAWS)):
            if getattr(self, key) not in valid:
                raise ValueError(f"unknown {key} {getattr(self, key)!r}; valid: {', '.join(valid)}")
        if self.dtype not in ("float64", "float32"):
            raise ValueError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid inits are: {', '.join(INITS)}")
        get_activation(self.activation)
        get_activation(self.output_activation, argument="output_activation")
        get_loss(self.loss)
        if self.inputs in ("gaussian", "sphere") and self.q0 <= 0:
            raise ValueError(
                f"q0 must be > 0 (E|x|^2/n_0 of {self.inputs} inputs), got {self.q0!r}"
            )
        n_out = self.layer_widths()[-1]
        if self.targets == "one_hot" and n_out < 2:
            raise ValueError(
                f"targets = 'one_hot' needs an output width >= 2 (one unit per class), got "
                f"{n_out}; set output_width (or the last of widths)"
            )
        if self.loss == "cross_entropy" and not (
            self.targets == "one_hot"
            or (
                self.targets == "constant"
                and self.target_value >= 0
                and abs(self.target_value * n_out - 1.0) <= 1e-6
            )
        ):
            raise ValueError(
                "loss = 'cross_entropy' needs targets whose rows are probability vectors: "
                "targets = 'one_hot' (or 'constant' with target_value = 1/output width), got "
                f"targets = {self.targets!r}"
            )
        net = self.net()  # validates the widths and the weight law
        self.input_law()
        self.target_law()
        check_memory(net, self.batch, min(self.chunk, self.n_networks), self.np_dtype)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Experiment:
        """Build from a dict (e.g. a parsed TOML table), rejecting unknown keys.

        ``sigma_w2`` / ``sigma_b2`` (σ²) are accepted in place of ``sigma_w`` / ``sigma_b``."""
        values = sigma_aliases(values)
        known = {f.name: f for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown config key {key!r}{hint} (valid: {', '.join(known)})")
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> Experiment:
        """Read a flat TOML file of :class:`Experiment` fields.

        Raises
        ------
        ValueError
            The path is not a readable file, the file is not TOML, or a key or value is
            invalid (one line naming it).
        """
        path = Path(path)
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise ValueError(f"config {str(path)!r} {what}")
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{path}: not valid TOML: {err}") from None
        except OSError as err:
            raise ValueError(f"cannot read config {str(path)!r}: {err.strerror}") from None
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON/TOML friendly)."""
        d = dataclasses.asdict(self)
        if d["widths"] is not None:
            d["widths"] = list(d["widths"])
        return d

    # -- the objects the engine takes -----------------------------------------------------
    def layer_widths(self) -> tuple[int, ...]:
        """``(n_0, …, n_L)``."""
        if self.widths is not None:
            return tuple(self.widths)
        n0 = self.width if self.input_width is None else self.input_width
        return (n0,) + (self.width,) * (self.depth - 1) + (self.output_width,)

    def net(self) -> MLP:
        """The :class:`~deltastats.MLP` spec."""
        return MLP(
            self.layer_widths(),
            activation=self.activation,
            output_activation=self.output_activation,
            sigma_w=self.sigma_w,
            sigma_b=self.sigma_b,
            mu_w=self.mu_w,
            mu_b=self.mu_b,
            init=self.init,
        )

    def input_law(self) -> inputs_mod.InputLaw:
        """The input law object."""
        if self.inputs == "uniform":
            return inputs_mod.uniform()
        return inputs_mod.INPUT_LAWS[self.inputs](self.q0)

    def target_law(self) -> targets_mod.TargetLaw:
        """The target law object."""
        if self.targets == "zeros":
            return targets_mod.zeros()
        if self.targets == "one_hot":
            return targets_mod.one_hot(self.layer_widths()[-1])
        return targets_mod.TARGET_LAWS[self.targets](self.target_value)

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy dtype of the engine."""
        return np.dtype(self.dtype)


def sigma_aliases(d: dict) -> dict:
    """σ² aliases: ``sigma_w2``/``sigma_b2`` become ``sigma_w``/``sigma_b`` = √value."""
    out = dict(d)
    for alias, key in (("sigma_w2", "sigma_w"), ("sigma_b2", "sigma_b")):
        if alias in out:
            if key in out:
                raise ValueError(f"give either {alias} or {key}, not both")
            v = out.pop(alias)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"{alias} must be a number >= 0, got {v!r}")
            out[key] = float(np.sqrt(v))
    return out


def check_folder_name(key: str, name: Any) -> str:
    """``name`` as a plain folder name: it decides where results go, so it must not leave the
    output folder (no ``/``, ``\\``, ``..`` or absolute path) and must be a non-empty string.

    Raises
    ------
    ValueError
        Naming ``key``.
    """
    if not isinstance(name, str):
        raise ValueError(f"{key} must be a string (a plain folder name), got {name!r}")
    bad = (
        not name.strip()
        or name in (".", "..")
        or name != name.strip()
        or any(c in name for c in "/\\:\0")
        or any(ord(c) < 32 for c in name)
    )
    if bad:
        raise ValueError(
            f"{key} must be a plain folder name (no '/', '\\', ':', '..', leading or trailing "
            f"spaces), got {name!r}"
        )
    return name


def _positive_int(key: str, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{key} must be a positive int, got {v!r}")
