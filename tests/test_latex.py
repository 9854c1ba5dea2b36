"""LaTeX tables compile: every string escaped, output pure ASCII (pdflatex where installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

import deltastats as ds
from deltastats.workflow.latex import _GREEK, _SPECIAL, _SYMBOLS, escape, latex_table

RESULTS = Path(__file__).parents[1] / "results"


def test_every_special_character_is_escaped():
    assert escape("a_b%c&d#e$f{g}h~i^j\\k") == (
        r"a\_b\%c\&d\#e\$f\{g\}h\textasciitilde{}i\textasciicircum{}j\textbackslash{}k"
    )
    for ch in _SPECIAL:
        assert ch not in escape(ch).replace("\\" + ch, "").replace("\\textbackslash{}", "") or (
            ch in "{}\\"
        )


def test_deltastats_strings_become_ascii_without_fallbacks():
    from deltastats import theory

    texts = list(ds.STATISTICS) + list(ds.STATISTICS.values()) + list(theory.STATISTICS)
    texts += ["mean-field", "gaussian", "exact-linear", "hanin-lognormal", "σ_w² = 1.76 ± 0.1"]
    texts += ["E‖∂J/∂W⁽ˡ⁾‖² ≈ n·E[δ²]", "χ₁ = 1 → order–chaos", "(non-Gaussianity) −1.1%"]
    for t in texts:
        out = escape(t)
        assert out.isascii(), (t, out)
        assert "?" not in out or "?" in t, (t, out)
    assert escape("δ²") == r"$\delta^{2}$"
    assert all(ord(c) > 127 for c in {**_GREEK, **_SYMBOLS})


def test_table_escapes_cells_headers_and_the_whole_caption():
    df = pd.DataFrame({"statistic": ["z_var", "delta_sq"], "rel_error": ["-1.1%", "+6.4%"]})
    caption = "Disagreements: z_var [mean-field] at layer 8 (relative error -1.1%). " * 5
    tex = latex_table(df, caption=caption, label="tab:x_y")
    assert tex.isascii() and "\\label{tab:x-y}" in tex
    assert "z\\_var & -1.1\\% \\\\" in tex and "statistic & rel\\_error" in tex
    assert tex.count("relative error -1.1\\%") == 5 + 1  # never cut; +1: the short caption
    assert "\\caption[{Disagreements: z\\_var [mean-field] at layer 8 (relative error" in tex


def _compiles(tex_body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    doc = tmp_path / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
        + tex_body
        + "\n\\end{document}\n"
    )
    return subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


needs_pdflatex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex")


@needs_pdflatex
def test_a_hostile_table_compiles_with_pdflatex(tmp_path):
    df = pd.DataFrame(
        {"σ_w²": ["1.76 ± 0.1"], "what": ["E‖δ⁽ˡ⁾‖² & {x}_1 ~ 100% #1 $5 ^ \\"], "n": [3]}
    )
    res = _compiles(latex_table(df, caption="δ² at 100% [ok]; z_var ≈ −1.1% — fine"), tmp_path)
    assert res.returncode == 0, res.stdout[-2000:]


@needs_pdflatex
@pytest.mark.parametrize(
    "path", sorted(RESULTS.glob("*/comparison.tex")), ids=lambda p: p.parent.name
)
def test_committed_comparison_tables_compile(path, tmp_path):
    res = _compiles(path.read_text(), tmp_path)
    assert res.returncode == 0, res.stdout[-2000:]
