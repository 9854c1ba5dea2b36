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

Labelled data: ``inputs = "data"`` with ``data = "digits.npz"`` (a path relative to the config
file; ``.npz`` with arrays ``X`` and ``Y``, or a ``.npy``/``.csv`` table whose first n₀ columns
are X and the rest, if any, the labels) draws rows of X; ``targets = "data"`` makes each row's
own label its target (:func:`deltastats.inputs.from_arrays`). The file is read and checked
against the widths when the config is built, before any work.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import checks
from ..model import inputs as inputs_mod
from ..model import targets as targets_mod
from ..model.activations import get_activation
from ..model.losses import get_loss
from ..model.networks import INITS, MLP
from ..stats.design import check_memory
from ..stats.intervals import check_method_confidence
from ..stats.results import MIN_NETWORKS
from .compare import CORRECTIONS


@dataclass(frozen=True)
class Experiment:
    """A Monte Carlo experiment on random MLPs.

    Parameters
    ----------
    name : str
        Used for the results folder ``results/<name>/``.
    width, depth, input_width, output_width : int
        Widths ``(input_width, width × (depth−1), output_width)`` unless ``widths`` is given.
        ``output_width = "width"`` is a square readout, n_L = width (so a grid over width
        can keep n_L = n: ``output_width = [1, "width"]``).
    widths : tuple of int or None
        Explicit ``(n_0, …, n_L)``; overrides width/depth/input_width/output_width.
    activation, output_activation : str
        Registry names (``deltastats list`` shows them).
    sigma_w, sigma_b, mu_w, mu_b : float
        Weight/bias law: W_ij ~ N(μ_w/n_in, σ_w²/n_in), b ~ N(μ_b, σ_b²).
    init : str
        One of :data:`deltastats.INITS`.
    inputs : str
        ``"gaussian"``, ``"sphere"`` or ``"uniform"``; ``q0`` sets E‖x‖²/n₀ for the first two;
        ``"data"``: rows of the file ``data``.
    targets : str
        ``"zeros"``, ``"constant"`` (value ``target_value``), ``"gaussian"`` (std
        ``target_value``), ``"one_hot"`` (n_classes = output width) or ``"data"`` (each
        row's own label, with ``inputs = "data"``).
    data : str or None
        The data file of ``inputs = "data"`` (``.npz``, ``.npy`` or ``.csv``; module
        docstring); relative to the config file in :meth:`from_toml`.
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
    output_width: int | str = 1
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
    data: str | None = None

    def __post_init__(self) -> None:
        check_folder_name("name", self.name)
        if isinstance(self.output_width, str) and self.output_width != "width":
            raise ValueError(
                f'output_width must be a positive int or "width" (n_L = width), '
                f"got {self.output_width!r}"
            )
        for key in ("width", "depth", "output_width", "n_networks", "batch", "chunk"):
            if key == "output_width" and self.output_width == "width":
                continue
            _positive_int(key, getattr(self, key))
        if self.input_width is not None:
            _positive_int("input_width", self.input_width)
        checks.integer("seed", self.seed, 0)
        for key in ("sigma_w", "sigma_b", "mu_w", "mu_b", "q0", "target_value", "weight_decay"):
            checks.real(key, getattr(self, key))
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
            valid = (*valid, "data")
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
        if self.inputs == "data" or self.targets == "data" or self.data is not None:
            self._data()  # reads the file and checks it against the widths
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
        return cls._from_file_values(_read_toml(path), path)

    @classmethod
    def _from_file_values(cls, values: dict, path: Path) -> Experiment:
        if isinstance(values.get("data"), str):  # relative to the config file
            values["data"] = str(path.parent / values["data"])
        values.setdefault("name", path.stem)  # never the built-in default's folder
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (JSON/TOML friendly; ``data`` only when given)."""
        d = dataclasses.asdict(self)
        if d["data"] is None:
            # Left out when unused, so the digests and seeds of sweep points without data
            # files are those of configs that predate the key.
            del d["data"]
        if d["widths"] is not None:
            d["widths"] = list(d["widths"])
        return d

    # -- the objects the engine takes -----------------------------------------------------
    def layer_widths(self) -> tuple[int, ...]:
        """``(n_0, …, n_L)``."""
        if self.widths is not None:
            return tuple(self.widths)
        n0 = self.width if self.input_width is None else self.input_width
        n_out = self.width if self.output_width == "width" else self.output_width
        return (n0,) + (self.width,) * (self.depth - 1) + (n_out,)

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

    def _data(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(X, Y)`` of the data file, checked against the widths (``Y`` ``None``: no labels)."""
        if self.inputs != "data":
            key = "targets = 'data'" if self.data is None else f"data = {self.data!r}"
            raise ValueError(f"{key} needs inputs = 'data', got inputs = {self.inputs!r}")
        if not isinstance(self.data, str) or not self.data:
            raise ValueError("inputs = 'data' needs data = '<file>.npz' (or .npy / .csv)")
        path = Path(self.data)
        stat = path.stat() if path.is_file() else None
        X, Y = _read_data(str(path), None if stat is None else (stat.st_mtime_ns, stat.st_size))
        n0, nL = self.layer_widths()[0], self.layer_widths()[-1]
        if Y is None and path.suffix.lower() != ".npz":
            # A table: the first n₀ columns are X, the rest (none, 1 or n_L) the labels.
            if X.shape[1] not in (n0, n0 + 1, n0 + nL):
                raise ValueError(
                    f"data file {path.name!r} has {X.shape[1]} columns; expected n_0 = {n0} "
                    f"(inputs), n_0 + 1 or n_0 + n_L = {n0 + nL} (inputs, then labels)"
                )
            X, Y = X[:, :n0], (X[:, n0:] if X.shape[1] > n0 else None)
            if Y is not None and Y.shape[1] == 1 and nL > 1:
                Y = Y[:, 0]  # one column of class indices
        if X.shape[1] != n0:
            raise ValueError(f"data file {path.name!r}: X has {X.shape[1]} columns, n_0 = {n0}")
        if self.targets == "data":
            if Y is None:
                raise ValueError(f"targets = 'data' but data file {path.name!r} has no labels")
            inputs_mod.from_arrays(X, Y).check_labels(nL)
        else:
            inputs_mod.from_array(X)
        return X, Y

    def input_law(self) -> inputs_mod.InputLaw:
        """The input law object."""
        if self.inputs == "data":
            X, Y = self._data()
            if self.targets == "data":
                return inputs_mod.from_arrays(X, Y)
            return inputs_mod.from_array(X)
        if self.inputs == "uniform":
            return inputs_mod.uniform()
        return inputs_mod.INPUT_LAWS[self.inputs](self.q0)

    def target_law(self) -> targets_mod.TargetLaw:
        """The target law object."""
        if self.targets == "zeros":
            return targets_mod.zeros()
        if self.targets == "data":
            return targets_mod.paired(self.input_law())
        if self.targets == "one_hot":
            return targets_mod.one_hot(self.layer_widths()[-1])
        return targets_mod.TARGET_LAWS[self.targets](self.target_value)

    @property
    def np_dtype(self) -> np.dtype:
        """The numpy dtype of the engine."""
        return np.dtype(self.dtype)


@functools.lru_cache(maxsize=8)
def _read_data(path: str, version) -> tuple[np.ndarray, np.ndarray | None]:
    """The file's ``(X, Y)``, read once per (path, modification time and size)."""
    return inputs_mod.load_data(path)


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
    checks.positive_int(key, v)


#: Keys of an ``[analysis]`` table (run and sweep TOMLs): how Monte Carlo is summarized and
#: compared with theory; recorded in ``metadata.json`` under ``analysis``.
ANALYSIS_KEYS = ("confidence", "method", "alpha", "correction")


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise ValueError(f"config {str(path)!r} {what}")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ValueError(f"cannot read config {str(path)!r}: {err.strerror}") from None


def analysis_table(table: Any, where: str = "[analysis]") -> dict:
    """The checked ``[analysis]`` settings of a config (only the keys given).

    >>> analysis_table({"confidence": 0.9, "method": "jackknife"})
    {'confidence': 0.9, 'method': 'jackknife'}
    """
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table of {', '.join(ANALYSIS_KEYS)}, got {table!r}")
    for key in table:
        if key not in ANALYSIS_KEYS:
            close = difflib.get_close_matches(key, ANALYSIS_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown key {key!r} in {where}{hint} (valid: {', '.join(ANALYSIS_KEYS)})"
            )
    analysis_settings(**table)  # checks every value, naming it
    return dict(table)


def load_run(path: str | Path) -> tuple[Experiment, dict]:
    """A run's TOML: its :class:`Experiment` fields and its ``[analysis]`` table (checked)."""
    path = Path(path)
    values = _read_toml(path)
    analysis = analysis_table(values.pop("analysis", {}))
    return Experiment._from_file_values(values, path), analysis


def analysis_settings(
    confidence: float = 0.95, method: str = "clt", alpha: float = 0.01, correction: str = "holm"
) -> dict:
    """The analysis settings a results folder records (``metadata.json`` → ``analysis``), checked.

    >>> analysis_settings()["alpha"]
    0.01
    """
    check_method_confidence(method, confidence)
    checks.probability("alpha", alpha)
    if correction not in CORRECTIONS:
        raise ValueError(
            f"unknown correction {correction!r}; valid methods are: {', '.join(CORRECTIONS)}"
        )
    return {
        "confidence": float(confidence),
        "method": method,
        "alpha": float(alpha),
        "correction": correction,
        "min_networks": MIN_NETWORKS,
    }
