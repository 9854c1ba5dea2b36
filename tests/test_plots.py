"""Plot functions run headless, return Axes, and draw what they are given."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

from deltastats import plots


def _table():
    rows = []
    for sw in (1.0, 2.0):
        for layer in range(1, 6):
            for stat, base in (("delta_sq", 0.1 * sw**layer), ("delta_mean", 0.01 * layer)):
                rows.append(
                    dict(
                        sigma_w2=sw,
                        layer=layer,
                        unit=-1,
                        statistic=stat,
                        estimate=base,
                        ci_low=base * 0.9,
                        ci_high=base * 1.1,
                        prediction=base * 1.02,
                    )
                )
    return pd.DataFrame(rows)


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"


def test_layer_statistic_draws_mc_ci_and_theory(tmp_path):
    ax = plots.plot_layer_statistic(_table(), "delta_sq", hue="sigma_w2")
    assert isinstance(ax, Axes)
    assert ax.get_yscale() == "log"
    lines = [l for l in ax.get_lines() if l.get_linestyle() == "--"]
    assert len(lines) == 2  # one theory line per setting
    solid = [l for l in ax.get_lines() if l.get_linestyle() == "-"]
    np.testing.assert_allclose(solid[1].get_ydata(), [0.1 * 2.0**l for l in range(1, 6)])
    paths = plots.save(ax, tmp_path / "fig")
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)


def test_layer_statistic_several_statistics_and_bad_name():
    ax = plots.plot_layer_statistic(
        _table()[lambda d: d.sigma_w2 == 1.0], ["delta_mean", "delta_sq"], log=False
    )
    assert len(ax.get_legend().get_texts()) >= 2
    with pytest.raises(ValueError, match="no rows"):
        plots.plot_layer_statistic(_table(), "nope")


def test_phase_diagram_histogram_qq_and_vs_parameter():
    grid = pd.DataFrame(
        [
            dict(sigma_w2=a, sigma_b2=b, log_growth=np.log(a) - b)
            for a in (0.5, 1.0, 2.0)
            for b in (0.0, 0.1)
        ]
    )
    crit = pd.DataFrame(dict(sigma_w2=[1.0, 1.3], sigma_b2=[0.0, 0.1]))
    assert isinstance(plots.plot_phase_diagram(grid, critical=crit), Axes)
    rng = np.random.default_rng(0)
    samples = pd.DataFrame(dict(value=rng.standard_normal(400), layer=[1, 2] * 200))
    assert isinstance(plots.plot_histogram(samples), Axes)
    q = pd.DataFrame(
        dict(theoretical=np.linspace(-2, 2, 50), sample=np.linspace(-2, 2, 50), layer=1)
    )
    assert isinstance(plots.plot_qq(q), Axes)
    d = pd.DataFrame(dict(beta=[0.1, 0.2, 0.4], estimate=[0.5, 1.0, 2.1], prediction=[0.5, 1, 2]))
    ax = plots.plot_vs_parameter(d, x="beta", y="estimate", theory="prediction")
    assert isinstance(ax, Axes)
