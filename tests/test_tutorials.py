"""The tutorials run end to end: docs/tutorials/own_model.py on a small design writes its
figure and prints the per-block table, the ICCs and the allocation advice; quickstart.py and
order_to_chaos.py print what their pages show and write their results folders."""

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = ("blocks.0", "blocks.1", "blocks.2")


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails if the file is not a PNG."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_own_model_tutorial_runs_small(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    fig = tmp_path / "fig.png"
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "tutorials" / "own_model.py")]
        + ["--networks", "40", "--out", str(fig)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    # The figure: a real image, not an empty canvas.
    assert fig.is_file() and fig.stat().st_size > 10_000
    width, height = _png_size(fig)
    assert width >= 400 and height >= 300
    # One E[δ²] row per block with its interval, one ICC row and one allocation row each.
    assert "E[δ²] per block (40 networks × 16 inputs, 95 % CI)" in out
    for section in ("E[δ²] per block", "ICC of δ²", "Allocation advice"):
        assert section in out
    rows = [line.split()[0] for line in out.splitlines() if line.strip().startswith(BLOCKS)]
    assert rows == list(BLOCKS) * 3
    number = r"[-+]?\d+\.\d+e[-+]\d+"
    for block in BLOCKS:  # "blocks.k  estimate [low, high]": positive, inside its interval
        m = re.search(rf"{re.escape(block)}\s+({number})\s+\[\s*({number}),\s*({number})\]", out)
        assert m, f"no E[δ²] row with an interval for {block}"
        est, low, high = map(float, m.groups())
        assert 0 < low < est < high
    assert "inputs per network" in out and "Advice: draw about" in out


def _run_tutorial(name: str, tmp_path: Path, *args: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "tutorials" / name), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_quickstart_tutorial_runs(tmp_path):
    out = _run_tutorial("quickstart.py", tmp_path, "--out", "qs", "--networks", "100")
    assert "E[δ²] at layer 1:" in out and "95 % interval" in out
    # theory beside Monte Carlo: z_var has a finite-width prediction and a verdict
    z_rows = [line.split() for line in out.splitlines() if " z_var " in line]
    assert len(z_rows) == 4 and all(r[4] == "finite-width" for r in z_rows)
    assert all(r[-1] in ("agrees", "disagrees") for r in z_rows)
    assert "Allocation advice" in out and "inputs_per_network" in out
    folder = tmp_path / "qs"
    for f in ("per_layer.csv", "report.md", "report.html", "comparison.tex", "metadata.json"):
        assert (folder / f).stat().st_size > 0, f
    assert "Theory agrees with Monte Carlo in" in out


def test_order_to_chaos_tutorial_runs(tmp_path):
    out = _run_tutorial("order_to_chaos.py", tmp_path, "--out", "oc", "--networks", "40")
    assert "critical line: σ_b² = 0.05  σ_w² = 1.761" in out
    assert "8 points, 0 failed" in out
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[-1] in ("vanishing", "exploding"):
            rows[(float(parts[0]), float(parts[1]))] = parts
    assert len(rows) == 8
    # deep in either phase Monte Carlo and mean field agree on the direction
    assert rows[(0.8, 0.1)][5:] == ["ordered", "vanishing"]
    assert rows[(3.0, 0.0)][5:] == ["chaotic", "exploding"]
    folder = tmp_path / "oc"
    assert (folder / "fig_phase_diagram.png").stat().st_size > 10_000
    assert _png_size(folder / "fig_phase_diagram.png")[0] >= 400
    assert "fig_phase_diagram.png" in (folder / "report.md").read_text(encoding="utf-8")
