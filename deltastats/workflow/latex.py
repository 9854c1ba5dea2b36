"""LaTeX tables for papers: every string escaped, the output pure ASCII, so a table compiles
with plain pdflatex (and booktabs) wherever it is ``\\input``.

Text goes through :func:`escape`: the ten characters with a meaning in LaTeX are escaped, and
the Unicode symbols deltastats writes (Greek letters, super- and subscripts, ‖, ±, ≈, …) become
math-mode macros. A character with no mapping becomes ``?`` rather than an error at compile
time; the tests check that none of deltastats' own strings needs that fallback.
"""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

__all__ = ["escape", "latex_table"]

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}

_GREEK = {
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\epsilon",
    "ζ": r"\zeta", "η": r"\eta", "θ": r"\theta", "κ": r"\kappa", "λ": r"\lambda",
    "μ": r"\mu", "ν": r"\nu", "ξ": r"\xi", "π": r"\pi", "ρ": r"\rho", "σ": r"\sigma",
    "τ": r"\tau", "φ": r"\phi", "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega",
    "Γ": r"\Gamma", "Δ": r"\Delta", "Θ": r"\Theta", "Λ": r"\Lambda", "Ξ": r"\Xi",
    "Π": r"\Pi", "Σ": r"\Sigma", "Φ": r"\Phi", "Ψ": r"\Psi", "Ω": r"\Omega",
}  # fmt: skip

_SYMBOLS = {
    "‖": r"\|", "±": r"\pm", "≈": r"\approx", "≤": r"\leq", "≥": r"\geq", "≠": r"\neq",
    "×": r"\times", "·": r"\cdot", "−": "-", "→": r"\to", "←": r"\leftarrow", "∞": r"\infty",
    "∂": r"\partial", "∇": r"\nabla", "⊙": r"\odot", "√": r"\surd", "∑": r"\sum",
    "∈": r"\in", "ℓ": r"\ell", "…": r"\ldots", "′": r"'", "ˡ": "l", "⁽": "(", "⁾": ")",
}  # fmt: skip

_TEXT = {"–": "--", "—": "---", "‘": "`", "’": "'", "“": "``", "”": "''", "\u00a0": "~"}

_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻ⁿⁱ", "0123456789+-ni"))
_SUBSCRIPTS = dict(zip("₀₁₂₃₄₅₆₇₈₉₊₋", "0123456789+-"))


def _char(c: str) -> str:
    if c in _SPECIAL:
        return _SPECIAL[c]
    if c in _TEXT:
        return _TEXT[c]
    if c in _GREEK or c in _SYMBOLS:
        return f"${_GREEK.get(c) or _SYMBOLS[c]}$"
    if c in _SUPERSCRIPTS:
        return f"$^{{{_SUPERSCRIPTS[c]}}}$"
    if c in _SUBSCRIPTS:
        return f"$_{{{_SUBSCRIPTS[c]}}}$"
    if ord(c) < 128:
        return c
    base = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode()
    return base if base else "?"


def escape(text: object) -> str:
    r"""``text`` as pure-ASCII LaTeX that typesets the same characters.

    Examples
    --------
    >>> print(escape("z_var at 100% (δ² ≈ 1), cost $5"))
    z\_var at 100\% ($\delta^{2}$ $\approx$ 1), cost \$5
    """
    out = "".join(_char(c) for c in str(text))
    # Adjacent math runs merge ($\delta$$^{2}$ → $\delta^{2}$); an escaped \$ is no math.
    return re.sub(r"(?<!\\)\$\$", "", out)


def latex_table(
    df: pd.DataFrame, *, caption: str = "", short_caption: str | None = None, label: str = ""
) -> str:
    """A booktabs ``table`` environment of ``df``, every cell, header and caption escaped.

    Parameters
    ----------
    df : DataFrame
        Cells are written as their ``str`` (format numbers before); NaN and None are blank.
    caption : str
        The full caption (never cut).
    short_caption : str or None
        The list-of-tables entry; default: the caption's first sentence.
    label : str
        ``\\label`` of the table (omitted when empty).
    """
    cols = list(df.columns)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in cols]
    spec = "".join("r" if n else "l" for n in numeric)

    def cell(v) -> str:
        return "" if v is None or (isinstance(v, float) and v != v) else escape(v)

    lines = ["\\begin{table}", "\\centering"]
    if caption:
        short = short_caption if short_caption is not None else caption.split(". ")[0]
        lines.append(f"\\caption[{{{escape(short)}}}]{{{escape(caption)}}}")
    if label:  # a label is a key, not text: only characters that are safe in any key
        lines.append(f"\\label{{{re.sub(r'[^A-Za-z0-9:.-]', '-', label)}}}")
    lines += [f"\\begin{{tabular}}{{{spec}}}", "\\toprule"]
    lines.append(" & ".join(escape(c) for c in cols) + " \\\\")
    lines.append("\\midrule")
    for row in df.itertuples(index=False):
        lines.append(" & ".join(cell(v) for v in row) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)
