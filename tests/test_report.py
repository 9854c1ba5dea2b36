"""Reports from small sweeps; every experiment config runs at its --quick size."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deltastats.compare import compare, summarize
from deltastats.report import write_report
from deltastats.sweeps import run_sweep

EXPERIMENTS = sorted((Path(__file__).parents[1] / "experiments").glob("*.toml"))


def test_report_of_a_phase_diagram_sweep(tmp_path):
    cfg = {
        "name": "mini_chaos",
        "seed": 1,
        "base": {"activation": "tanh", "depth": 5, "width": 16, "n_networks": 8, "batch": 4},
        "grid": {"sigma_w2": [0.8, 1.6, 2.4], "sigma_b2": [0.0, 0.1]},
    }
    run_sweep(cfg, out=tmp_path, progress=False)
    rep = write_report(tmp_path)
    md = rep.markdown.read_text()
    assert "## Monte Carlo vs theory" in md
    section = md.split("## Monte Carlo vs theory")[1].split("## Figures")[0]
    table_lines = [l for l in section.splitlines() if l.startswith("|")]
    assert len(table_lines) == 2 + 6 and "agrees" in table_lines[0]  # one row per point
    names = {p.name for p in rep.figures}
    assert "fig_phase_diagram.png" in names
    for fig in rep.figures:
        assert f"]({fig.name})" in md
    html = rep.html.read_text()
    assert html.count("data:image/png;base64,") == len(rep.figures)
    assert (tmp_path / "comparison.tex").read_text().startswith("\\begin{table}")
    assert "Key statistics per point" in md
    assert rep.summary.startswith("Only 8 networks per point")  # the few-networks notice
    assert "Theory agrees with Monte Carlo in" in rep.summary


@pytest.mark.slow
@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: p.stem)
def test_every_experiment_runs_quick_and_reports(config, tmp_path):
    res = run_sweep(config, out=tmp_path, quick=True, progress=False)
    assert not res.failed
    assert not res.table.empty
    rep = write_report(tmp_path)
    assert rep.markdown.exists() and rep.figures


def test_compare_verdicts_and_summary():
    est = pd.DataFrame(
        dict(
            layer=[1, 2, 3],
            unit=-1,
            statistic="delta_sq",
            estimate=[1.0, 2.0, 3.0],
            std_error=[0.1, 0.1, 0.1],
            ci_low=0,
            ci_high=0,
            n_networks=1000,
        )
    )
    pred = pd.DataFrame(
        dict(
            layer=[1, 2, 3],
            statistic="delta_sq",
            prediction=[1.05, 2.0, 4.0],
            assumption="gaussian",
        )
    )
    table = compare(est, pred)
    assert table["verdict"].tolist() == ["agrees", "agrees", "disagrees"]
    assert table["z_score"].round(6).tolist() == [-0.5, 0.0, -10.0]
    # Holm: the smallest p-value is multiplied by the number of rows.
    assert table["p_adjusted"].iloc[2] == pytest.approx(3 * table["p_value"].iloc[2])
    assert "delta_sq [gaussian] at layer(s) 3" in summarize(table)
    lenient = compare(est, pred, rel_tol=0.3)
    assert (lenient["verdict"] == "agrees").all()
    with pytest.raises(ValueError, match="alpha"):
        compare(est, pred, alpha=1.5)
    with pytest.raises(ValueError, match="lacks columns"):
        compare(est.drop(columns="std_error"), pred)


def test_compare_adds_the_predictions_numerical_error_in_quadrature():
    """A prediction's numerical uncertainty (theory.predict's ``numerical_error``) widens the
    test: z = (estimate − prediction)/√(SE² + ε²), so a row that is off by its theory's own
    numerical error is not read as a failure of the assumption."""
    est = pd.DataFrame(
        dict(layer=[1, 2], unit=-1, statistic="delta_sq", estimate=[1.0, 1.0],
             std_error=[0.03, 0.03], n_networks=1000)
    )  # fmt: skip
    pred = pd.DataFrame(
        dict(layer=[1, 2], statistic="delta_sq", prediction=[1.2, 1.2],
             assumption="finite-width", numerical_error=[0.0, 0.04])
    )  # fmt: skip
    table = compare(est, pred)
    assert table["z_score"].round(6).tolist() == [-6.666667, -4.0]
    assert table["verdict"].tolist() == ["disagrees", "disagrees"]
    pred.loc[1, "numerical_error"] = 0.2
    table = compare(est, pred)
    assert table["z_score"].iloc[1] == pytest.approx(-0.2 / np.hypot(0.03, 0.2))
    assert table["verdict"].tolist() == ["disagrees", "agrees"]


def test_compare_marks_non_finite_estimates_undefined_and_keeps_them_out_of_holm():
    est = pd.DataFrame(
        dict(
            layer=[1, 2],
            unit=-1,
            statistic="log_delta_norm_sq_var",
            estimate=[float("nan"), 1.0],
            std_error=[float("nan"), 0.1],
            n_networks=100,
        )
    )
    pred = pd.DataFrame(
        dict(layer=[1, 2], statistic="log_delta_norm_sq_var", prediction=[1.0, 1.0])
    )
    table = compare(est, pred)
    assert table["verdict"].tolist() == ["undefined", "agrees"]
    assert table["p_adjusted"].iloc[1] == table["p_value"].iloc[1]  # a family of one
    assert "1 rows are undefined" in summarize(table)


def test_compare_keeps_overflowed_predictions_as_undefined_and_drops_uncovered_rows():
    est = pd.DataFrame(
        dict(
            layer=[1, 2, 3],
            unit=-1,
            statistic="delta_sq",
            estimate=[1.0, 2.0, 3.0],
            std_error=0.1,
            n_networks=200,
        )
    )
    pred = pd.DataFrame(
        dict(layer=[1, 2, 3], statistic="delta_sq", prediction=[1.0, float("inf"), float("nan")])
    )
    table = compare(est, pred)
    assert table["layer"].tolist() == [1, 2]  # NaN: theory does not cover layer 3
    assert table["verdict"].tolist() == ["agrees", "undefined"]


def test_analysis_settings_are_recorded_and_read_by_the_report(tmp_path):
    import json

    from deltastats.config import Experiment
    from deltastats.runner import run_experiment

    exp = Experiment.from_dict(dict(name="settings", width=8, depth=3, n_networks=20, batch=4))
    res = run_experiment(
        exp, tmp_path, progress=False, confidence=0.9, alpha=0.05, correction="fdr_bh"
    )
    meta = json.loads((res.out_dir / "metadata.json").read_text())
    assert meta["analysis"] == {
        "confidence": 0.9,
        "method": "clt",
        "alpha": 0.05,
        "correction": "fdr_bh",
        "min_networks": 100,
    }
    md = (res.out_dir / "report.md").read_text()
    assert "Benjamini–Hochberg-adjusted" in md and "(level 0.05)" in md and "clt at 90%" in md
    assert "level 1%" not in md
    # The 90 % interval is the t interval of that level.
    from scipy import stats

    t = res.table[res.table["statistic"] == "delta_sq"]
    half = (t["ci_high"] - t["ci_low"]) / (2 * t["std_error"])
    assert half.to_numpy() == pytest.approx(stats.t.ppf(0.95, 19), rel=1e-12)
    with pytest.raises(ValueError, match="correction"):
        run_experiment(exp, None, progress=False, correction="holmes")


def test_phase_diagram_per_swept_activation_with_its_own_critical_line(tmp_path):
    cfg = {
        "name": "two_acts",
        "seed": 2,
        "base": {"depth": 4, "width": 8, "n_networks": 4, "batch": 2},
        "grid": {"activation": ["tanh", "erf"], "sigma_w2": [1.0, 2.0], "sigma_b2": [0.0, 0.2]},
    }
    run_sweep(cfg, out=tmp_path, progress=False, jobs=1)
    meta_sweep = __import__("json").loads((tmp_path / "metadata.json").read_text())
    assert meta_sweep["analysis"]["alpha"] == 0.01
    rep = write_report(tmp_path)
    names = {p.name for p in rep.figures}
    assert {"fig_phase_diagram_tanh.png", "fig_phase_diagram_erf.png"} <= names
    from deltastats import theory
    from deltastats.workflow.report import _critical_line

    growth = pd.DataFrame({"sigma_b2": [0.0, 0.2], "sigma_w2": [1.0, 2.0], "log_growth": 0.0})
    for act in ("tanh", "erf"):
        line = _critical_line(act, growth)
        expected = theory.critical_sigma_w(line["sigma_b2"].to_numpy() ** 0.5, act) ** 2
        assert line["sigma_w2"].to_numpy() == pytest.approx(expected)
    # erf's line is not tanh's: the activation matters.
    assert not _critical_line("erf", growth)["sigma_w2"].equals(
        _critical_line("tanh", growth)["sigma_w2"]
    )


def test_excluded_networks_never_give_a_disagreement(tmp_path, capsys):
    """A chaotic float32 net overflows in some networks: every row says how many were excluded,
    none says "disagrees", and the report and the CLI table state it."""
    from deltastats.config import Experiment
    from deltastats.runner import print_table, run_experiment

    exp = Experiment.from_dict(
        dict(
            name="overflowing",
            activation="relu",
            depth=80,
            width=8,
            sigma_w=3.0,
            n_networks=30,
            batch=2,
            dtype="float32",
        )
    )
    with pytest.warns(Warning):
        res = run_experiment(exp, tmp_path, progress=False)
    t = res.table
    k = int(t["n_overflow"].max())
    assert 0 < k < 30
    judged = t["verdict"].dropna()
    assert not judged.empty and not (judged == "disagrees").any()
    assert (judged == f"undefined ({k} of 30 networks excluded)").all()
    md = (res.out_dir / "report.md").read_text()
    assert f"{k} of 30" in md and "biased sample" in md
    print_table(t)
    assert f"{k} of 30 networks excluded" in capsys.readouterr().out


def test_compare_marks_rows_of_excluded_networks_undefined():
    est = pd.DataFrame(
        dict(
            layer=[1, 2],
            statistic="delta_sq",
            estimate=[1.0, 5.0],
            std_error=0.1,
            n_networks=62,
            n_overflow=38,
        )
    )
    pred = pd.DataFrame(dict(layer=[1, 2], statistic="delta_sq", prediction=[1.0, 1.0]))
    out = compare(est, pred)
    assert (out["verdict"] == "undefined (38 of 100 networks excluded)").all()
    assert out["p_adjusted"].isna().all()
    assert "2 rows have no verdict" in summarize(out) and "0 of 0 rows" in summarize(out)


def test_sweep_summary_and_cli_state_excluded_networks_per_point(tmp_path, capsys):
    from deltastats.cli import main

    cfg = tmp_path / "overflow.toml"
    cfg.write_text(
        'name = "ovf"\nseed = 0\n[base]\nactivation = "relu"\nwidth = 8\nn_networks = 30\n'
        'batch = 2\ndtype = "float32"\nsigma_w = 3.0\n[grid]\ndepth = [3, 80]\n'
    )
    with pytest.warns(Warning):
        assert (
            main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--quiet", "--jobs", "1"]) == 0
        )
    points = pd.read_csv(tmp_path / "out" / "points.csv").set_index("depth")
    assert points.loc[3, "excluded_networks"] == 0 and points.loc[3, "networks"] == 30
    k = int(points.loc[80, "excluded_networks"])
    assert 0 < k < 30 and points.loc[80, "networks"] == 30
    out = capsys.readouterr().out
    assert f"{k} of 30 networks excluded" in out and out.count("networks excluded") == 1
    md = write_report(tmp_path / "out").markdown.read_text()
    assert f"{k} of 30 at depth = 80" in md


def test_report_reads_in_order_with_captions_banner_and_an_mc_table_without_theory(tmp_path):
    """Summary, headline figure, compact table, long table, figures; every figure captioned
    in words; a quick run says so; a run without theory still shows its Monte Carlo table;
    no row twice; the config readable."""
    from deltastats.config import Experiment
    from deltastats.runner import run_experiment

    exp = Experiment.from_dict(
        dict(
            name="ce",
            width=8,
            depth=3,
            output_width=3,
            n_networks=12,
            batch=4,
            loss="cross_entropy",
            targets="one_hot",
        )
    )
    res = run_experiment(exp, tmp_path, progress=False)
    md = (res.out_dir / "report.md").read_text()
    html = (res.out_dir / "report.html").read_text()
    assert "no statistic has a theory prediction here" in md
    assert "## Per layer: Monte Carlo [interval] beside theory" in md  # MC table, no theory
    assert "E[δ²] MC" in md and "E[δ²] theory" not in md
    order = [md.index(h) for h in ("## Summary", "![fig_delta_sq]", "## Per layer", "## Figures")]
    assert order == sorted(order)
    for text in (md, html):
        assert "Second moment E[δ²] of the error signal per layer" in text
        assert 'loss = "cross_entropy"' in text and "\\u03b4" not in text
    assert html.count("<figcaption>") == html.count("<img") and "fig_z_qq</figcaption>" not in html

    cfg = {
        "name": "q",
        "base": {"width": 6, "depth": 3, "n_networks": 4, "batch": 2},
        "grid": {"sigma_w": [1.0]},
        "quick": {"n_networks": 3},
    }
    run_sweep(cfg, out=tmp_path / "q", progress=False, jobs=1, quick=True)
    md = write_report(tmp_path / "q").markdown.read_text()
    assert "**Quick run**" in md
    assert md.count("| delta_norm_sq") == 0  # shown once, as delta_sq
    assert "one derived seed per point (1 points" in md
