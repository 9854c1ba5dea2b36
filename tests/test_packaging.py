"""What a user meets outside a checkout: shipped configs, folder names, flags, links."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import deltastats as ds
from deltastats import configs
from deltastats.cli import main

ROOT = Path(__file__).parents[1]


def test_shipped_configs_are_the_experiments_of_the_checkout():
    names = configs.names()
    assert "order_chaos" in names and len(names) == len(list((ROOT / "experiments").glob("*.toml")))
    for n in names:
        assert configs.path(n).read_bytes() == (ROOT / "experiments" / f"{n}.toml").read_bytes()
    with pytest.raises(ValueError, match="shipped: finite_width"):
        configs.path("order_choas")


def test_sweep_by_name_from_anywhere_writes_a_quick_folder_of_its_own(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", "linear_exact", "--quick", "--quiet", "--jobs", "1"]) == 0
    assert (tmp_path / "results" / "linear_exact-quick" / "results.parquet").exists()
    assert not (tmp_path / "results" / "linear_exact").exists()  # the full run's folder
    assert main(["list"]) == 0
    assert "deltastats sweep NAME" in capsys.readouterr().out


def test_run_names_its_folder_after_the_config_and_reads_its_analysis_table(
    tmp_path, capsys, monkeypatch
):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        "width = 8\ndepth = 3\nn_networks = 20\nbatch = 4\n"
        '[analysis]\nconfidence = 0.9\nmethod = "jackknife"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(cfg), "--quiet", "--alpha", "0.05"]) == 0
    folder = tmp_path / "results" / "tiny"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["name"] == "tiny" and not (tmp_path / "results" / "default").exists()
    assert meta["analysis"]["confidence"] == 0.9 and meta["analysis"]["method"] == "jackknife"
    assert meta["analysis"]["alpha"] == 0.05  # the flag over the table
    cfg.write_text("width = 8\n[analysis]\nconfidense = 0.9\n")
    assert main(["run", str(cfg)]) == 2
    assert "did you mean 'confidence'" in capsys.readouterr().err


def test_sweep_analysis_table_reaches_metadata(tmp_path):
    cfg = {
        "name": "an",
        "base": {"width": 6, "depth": 2, "n_networks": 4, "batch": 2},
        "grid": {"sigma_w": [1.0, 1.5]},
        "analysis": {"confidence": 0.8, "correction": "fdr_bh"},
    }
    res = ds.workflow.sweeps.run_sweep(cfg, out=tmp_path, progress=False, jobs=1)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["analysis"]["confidence"] == 0.8 and meta["analysis"]["correction"] == "fdr_bh"
    t = res.table[res.table["statistic"] == "delta_sq"]
    from scipy import stats

    half = (t["ci_high"] - t["ci_low"]) / (2 * t["std_error"])
    assert half.to_numpy() == pytest.approx(stats.t.ppf(0.9, 3), rel=1e-12)


def test_version_flag_and_report_link(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert (
        stop.value.code == 0 and capsys.readouterr().out.strip() == f"deltastats {ds.__version__}"
    )
    cfg = {"name": "l", "base": {"width": 6, "depth": 2, "n_networks": 4, "batch": 2}}
    ds.workflow.sweeps.run_sweep(cfg, out=tmp_path, progress=False, jobs=1)
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").resolve().as_uri() in capsys.readouterr().out


def test_package_metadata_files_exist():
    for name in ("LICENSE", "CITATION.cff", "CHANGELOG.md"):
        assert (ROOT / name).is_file(), name
    assert (Path(ds.__file__).parent / "py.typed").is_file()
    out = subprocess.run(
        [sys.executable, "-m", "deltastats", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("deltastats ")
