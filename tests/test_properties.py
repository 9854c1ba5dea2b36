"""Property-based tests (hypothesis) of the public entry points: ``MLP``, ``backprop``,
``estimate`` and the config loader (``Experiment.from_dict``, ``load_sweep``).

Valid arguments give finite results (or a documented warning: ``NumericalOverflowWarning``,
``FewNetworksWarning``); invalid ones raise ``ValueError`` or ``TypeError`` whose one-line
message names the offending argument; nothing else escapes. Runs are derandomized (a fixed
seed per test), so the generated cases are the same on every run.
"""

import math
import warnings

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import (  # noqa: E402
    HealthCheck,
    event,  # noqa: E402
    given,
    settings,
)
from hypothesis import strategies as st  # noqa: E402

import deltastats as ds  # noqa: E402
from deltastats.engine import NumericalOverflowWarning  # noqa: E402
from deltastats.stats.results import FewNetworksWarning  # noqa: E402
from deltastats.workflow.config import Experiment  # noqa: E402
from deltastats.workflow.sweeps import load_sweep  # noqa: E402

SETTINGS = dict(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)

ACTIVATIONS = ["tanh", "relu", "linear", "erf", "sigmoid", "gelu", "sin", "leaky_relu(0.2)"]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=6),
    st.sampled_from(["12", "3", "1.0", "nan", "-1"]),  # numbers in strings are not numbers
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(-2, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _expect_clean_error(err: BaseException, names) -> None:
    """A ValueError/TypeError with a one-line message naming one of ``names``."""
    assert isinstance(err, ValueError | TypeError), f"{type(err).__name__}: {err}"
    msg = str(err)
    assert msg and "\n" not in msg.strip(), msg
    assert any(n in msg for n in names), f"{msg!r} names none of {names}"


# -- MLP ------------------------------------------------------------------------------------------


@st.composite
def mlp_args(draw):
    args, bad = {}, []
    valid_widths = st.lists(st.integers(1, 6), min_size=2, max_size=5)
    # each argument is junk with probability 1/10, so about half the cases are valid
    if draw(st.integers(0, 9)):
        args["widths"] = draw(valid_widths)
    else:
        args["widths"] = draw(st.one_of(JUNK, st.lists(JUNK, max_size=4)))
        bad.append("widths")
    for name in ("activation", "output_activation"):
        if draw(st.integers(0, 9)):
            args[name] = draw(st.sampled_from(ACTIVATIONS))
        else:
            args[name] = draw(JUNK)
            bad.append(name)
    for name in ("sigma_w", "sigma_b", "mu_w", "mu_b"):
        choice = draw(st.integers(0, 9))
        if choice < 5:
            continue
        if choice < 9:
            args[name] = draw(st.one_of(st.floats(0, 3), st.integers(0, 3)))
            continue
        args[name] = draw(st.one_of(JUNK, st.lists(st.floats(0, 3), min_size=1, max_size=4)))
        # junk may happen to be valid (e.g. 1, or a list matching the depth)
        bad.append(name)
    if draw(st.booleans()):
        args["init"] = draw(st.sampled_from(["gaussian", "uniform", "orthogonal", "he"]))
    return args, bad


@settings(max_examples=400, **SETTINGS)
@given(mlp_args())
def test_mlp_valid_or_a_clean_error(case):
    args, suspects = case
    widths = args.pop("widths")
    try:
        net = ds.MLP(widths, **args)
    except Exception as err:  # noqa: BLE001 - the property is about which exceptions escape
        event(f"MLP error: {type(err).__name__}")
        assert suspects or args.get("init") == "orthogonal", f"valid MLP args raised {err}"
        # orthogonal needs mu_w = 0 (its message names init and mu_w)
        _expect_clean_error(err, [*suspects, "init", "mu_w"] if suspects else ["init"])
        return
    event("MLP valid")
    assert all(math.isfinite(v) for v in (*net.layer_sigma_w, *net.layer_mu_w))
    assert len(net.layer_sigma_b) == net.depth == len(net.widths) - 1


# -- backprop -------------------------------------------------------------------------------------


@st.composite
def backprop_case(draw):
    widths = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
    net = ds.MLP(
        widths,
        activation=draw(st.sampled_from(ACTIVATIONS)),
        sigma_w=draw(st.floats(0, 2.5)),
        sigma_b=draw(st.floats(0, 1)),
        mu_w=draw(st.floats(-2, 2)),
    )
    M = draw(st.integers(1, 3))
    B = draw(st.integers(0, 4)) if draw(st.integers(0, 9)) == 0 else draw(st.integers(1, 4))
    per_network = draw(st.booleans())
    shape_x = (M, B, widths[0]) if per_network else (B, widths[0])
    shape_y = (M, B, widths[-1]) if per_network else (B, widths[-1])
    kw, bad = {}, []
    if B == 0:
        bad.append("x")
    if draw(st.integers(0, 9)) == 0:
        shape_x = (*shape_x[:-1], shape_x[-1] + 1)
        bad.append("x")
    x = draw(st.floats(-3, 3)) * np.ones(shape_x)
    if draw(st.integers(0, 9)) == 0 and x.size:
        x.flat[0] = np.nan
        bad.append("x")
    y = np.full(shape_y, draw(st.floats(-1, 1)))
    if draw(st.integers(0, 9)) == 0:
        kw["weight_decay"] = draw(JUNK)
        bad.append("weight_decay")
    else:
        kw["weight_decay"] = draw(st.floats(0, 1))
    if draw(st.integers(0, 9)) == 0:
        kw["keep_layers"] = draw(st.one_of(JUNK, st.lists(JUNK, max_size=3)))
        bad.append("keep_layers")
    elif draw(st.booleans()):
        kw["keep_layers"] = draw(st.sets(st.integers(1, len(widths) - 1)))
    if draw(st.integers(0, 9)) == 0:
        kw["loss"] = draw(JUNK)
        bad.append("loss")
    if draw(st.integers(0, 9)) == 0:
        kw["threads"] = draw(JUNK)
        bad.append("threads")
    return net, M, x, y, kw, bad


@settings(max_examples=300, **SETTINGS)
@given(backprop_case(), st.integers(0, 2**32 - 1))
def test_backprop_finite_or_a_clean_error(case, seed):
    net, M, x, y, kw, suspects = case
    params = net.sample(M, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            trace = ds.backprop(net, params, x, y, **kw)
        except Exception as err:  # noqa: BLE001
            event(f"backprop error: {type(err).__name__}")
            assert suspects, f"valid arguments raised {type(err).__name__}: {err}"
            _expect_clean_error(err, [*suspects, "y", "cross_entropy"])
            return
    event("backprop valid, overflow" if trace.overflow.any() else "backprop valid")
    ok = ~trace.overflow
    for d in trace.delta:
        assert d.shape[:2] == (M, x.shape[-2])
        assert np.isfinite(d[ok]).all()
    assert np.isfinite(trace.loss[ok]).all()
    if trace.overflow.any():  # the documented warning
        assert any(issubclass(w.category, NumericalOverflowWarning) for w in caught)


# -- estimate -------------------------------------------------------------------------------------


@st.composite
def estimate_case(draw):
    widths = draw(st.lists(st.integers(1, 4), min_size=2, max_size=3))
    net = ds.MLP(
        widths, activation=draw(st.sampled_from(ACTIVATIONS)), sigma_w=draw(st.floats(0.1, 2))
    )
    kw, bad = {}, []
    options = {
        "n_networks": (st.integers(2, 12), st.one_of(st.integers(-1, 1), JUNK)),
        "batch": (st.integers(1, 4), st.one_of(st.integers(-1, 0), JUNK)),
        "confidence": (st.floats(0.5, 0.99), st.one_of(st.floats(1, 2), JUNK)),
        "method": (st.sampled_from(["clt", "jackknife"]), JUNK),
        "chunk": (st.integers(1, 5), st.one_of(st.integers(-1, 0), JUNK)),
        "weight_decay": (st.floats(0, 1), JUNK),
        "dtype": (st.sampled_from([np.float64, np.float32, "float64"]), JUNK),
        "seed": (st.integers(0, 2**31), st.one_of(st.integers(-5, -1), st.floats(), st.text())),
    }
    for name, (good, junk) in options.items():
        choice = draw(st.integers(0, 19))
        if choice == 0:
            kw[name] = draw(junk)
            bad.append(name)
        elif choice < 12:
            kw[name] = draw(good)
    return net, kw, bad


@settings(max_examples=60, **SETTINGS)
@given(estimate_case())
def test_estimate_finite_or_a_clean_error(case):
    net, kw, suspects = case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            est = ds.estimate(net, **kw)
        except Exception as err:  # noqa: BLE001
            event(f"estimate error: {type(err).__name__}")
            assert suspects, f"valid arguments raised {type(err).__name__}: {err}"
            _expect_clean_error(err, suspects)
            return
    event("estimate valid")
    table = est.per_layer()
    core = table[table.statistic.isin(["delta_mean", "delta_sq", "z_mean", "z_var"])]
    assert np.isfinite(core["estimate"]).all()
    said = " ".join(str(w.message) for w in caught)
    no_interval = ~np.isfinite(core["ci_low"]) | ~np.isfinite(core["ci_high"])
    if no_interval.any():
        # documented: "rows have a finite estimate but no standard error" (e.g. the
        # jackknife with so few networks that a deleted group leaves fewer than 2)
        event("estimate: NaN interval with its warning")
        assert "no standard error" in said, said
    assert (core["ci_low"] <= core["ci_high"])[~no_interval].all()
    documented = (FewNetworksWarning, NumericalOverflowWarning, RuntimeWarning)
    unexpected = [w for w in caught if not issubclass(w.category, documented)]
    assert not unexpected, [str(w.message) for w in unexpected]


# -- the config loader ----------------------------------------------------------------------------

EXP_KEYS = [
    "width",
    "depth",
    "n_networks",
    "batch",
    "chunk",
    "sigma_w",
    "sigma_w2",
    "activation",
    "targets",
    "inputs",
    "q0",
    "loss",
    "output_width",
    "dtype",
    "name",
    "seed",
    "widths",
    "weight_decay",
]
GOOD = {
    "width": st.integers(1, 6),
    "depth": st.integers(1, 4),
    "n_networks": st.integers(2, 6),
    "batch": st.integers(1, 4),
    "chunk": st.integers(1, 8),
    "sigma_w": st.floats(0, 2),
    "sigma_w2": st.floats(0, 4),
    "activation": st.sampled_from(ACTIVATIONS),
    "targets": st.sampled_from(["zeros", "constant", "gaussian", "one_hot"]),
    "inputs": st.sampled_from(["gaussian", "sphere", "uniform"]),
    "q0": st.floats(0.1, 3),
    "loss": st.sampled_from(["mse", "sum_squares", "cross_entropy"]),
    "output_width": st.integers(1, 3),
    "dtype": st.sampled_from(["float64", "float32"]),
    "name": st.sampled_from(["a", "run-1", "x y"]),
    "seed": st.integers(0, 5),
    "widths": st.lists(st.integers(1, 5), min_size=2, max_size=4),
    "weight_decay": st.floats(0, 1),
}
VALUES = st.one_of(
    JUNK,
    st.integers(1, 8),
    st.sampled_from(["tanh", "relu", "one_hot", "gaussian", "cross_entropy", "float32", "x/y"]),
)


@st.composite
def experiment_values(draw, max_size=4):
    keys = draw(st.lists(st.sampled_from([*EXP_KEYS, "wdith"]), max_size=max_size, unique=True))
    return {k: draw(VALUES if k not in GOOD or draw(st.integers(0, 5)) == 0 else GOOD[k])
            for k in keys}  # fmt: skip


@settings(max_examples=300, **SETTINGS)
@given(experiment_values())
def test_experiment_from_dict_valid_or_a_clean_error(values):
    values = {"n_networks": 4, "batch": 2, "width": 4, "depth": 2, **values}
    try:
        exp = Experiment.from_dict(values)
    except Exception as err:  # noqa: BLE001
        event(f"Experiment error: {type(err).__name__}")
        _expect_clean_error(err, [*values, "widths entries", "config key"])
        return
    event("Experiment valid")
    assert exp.net().depth >= 1 and exp.name == values.get("name", "default")


@st.composite
def grid_values(draw):
    keys = draw(st.lists(st.sampled_from(list(GOOD)), max_size=2, unique=True))
    grid = {}
    for k in keys:
        if draw(st.integers(0, 5)) == 0:
            grid[k] = draw(st.one_of(VALUES, st.lists(VALUES, max_size=3)))
        else:
            grid[k] = draw(st.lists(GOOD[k], min_size=1, max_size=3))
    return grid


def _mostly(good, junk=JUNK):
    """``good`` five times in six."""
    return st.integers(0, 5).flatmap(lambda k: junk if k == 0 else good)


SWEEP = st.fixed_dictionaries(
    {},
    optional={
        "name": _mostly(GOOD["name"], VALUES),
        "seed": _mostly(GOOD["seed"], VALUES),
        "paired": _mostly(st.booleans(), VALUES),
        "description": _mostly(st.text(max_size=10), VALUES),
        "base": _mostly(experiment_values(3)),
        "grid": _mostly(grid_values()),
        "points": _mostly(st.lists(experiment_values(2), max_size=3)),
        "quick": _mostly(experiment_values(2)),
    },
)


@settings(max_examples=300, **SETTINGS)
@given(SWEEP)
def test_load_sweep_valid_or_a_clean_error(cfg):
    keys = ["name", "seed", "paired", "description", "base", "grid", "points", "quick", "point"]
    try:
        sweep = load_sweep(cfg)
    except Exception as err:  # noqa: BLE001
        event(f"load_sweep error: {type(err).__name__}")
        _expect_clean_error(err, [*keys, *EXP_KEYS, "duplicates", "widths entries"])
        return
    event("load_sweep valid")
    ids = [sweep.point_id(i) for i in range(len(sweep.experiments))]
    assert len(set(ids)) == len(ids)  # never the same experiment twice
