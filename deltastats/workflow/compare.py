"""Monte Carlo beside theory: join, test, and give each row a verdict.

:func:`compare` joins an estimates table (``layer, statistic, estimate, std_error, …``) with a
predictions table (``layer, statistic, prediction, assumption``) on (layer, statistic) and tests
H₀: "the Monte Carlo expectation equals the prediction" per row with

    z = (estimate − prediction) / std_error,     p = 2·(1 − F_t(|z|; n_networks − 1)),

the t law because the standard error comes from the between-network spread (networks are the
independent unit). The p-values of one comparison are adjusted for multiple testing (Holm by
default, which controls the family-wise error; ``"fdr_bh"`` for Benjamini–Hochberg), and a row
``agrees`` when its adjusted p-value is above ``alpha`` — or, optionally, when the relative error
is within ``rel_tol`` (an effect too small to matter even if, with many networks, significant).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

#: Multiple-testing methods (statsmodels ``multipletests``) a comparison may use.
CORRECTIONS = (
    "holm",
    "fdr_bh",
    "bonferroni",
    "sidak",
    "holm-sidak",
    "simes-hochberg",
    "hommel",
    "fdr_by",
)

#: Assumptions whose rows are shown but never tested: a prediction that contains a constant
#: fitted to Monte Carlo cannot confirm or refute the Monte Carlo it was fitted to.
NO_VERDICT = ("empirical",)

#: Columns of the table :func:`compare` returns, in order.
COLUMNS = [
    "layer",
    "statistic",
    "estimate",
    "std_error",
    "ci_low",
    "ci_high",
    "prediction",
    "assumption",
    "rel_error",
    "z_score",
    "p_value",
    "p_adjusted",
    "verdict",
]


def compare(
    estimates,
    predictions: pd.DataFrame,
    *,
    alpha: float = 0.01,
    correction: str = "holm",
    rel_tol: float = 0.0,
    keys: tuple[str, ...] = ("layer", "statistic"),
) -> pd.DataFrame:
    """Join Monte Carlo estimates and theory predictions and give each row a verdict.

    Parameters
    ----------
    estimates : DataFrame or object with ``per_layer()``
        Columns ``layer, statistic, estimate, std_error`` (``ci_low, ci_high, n_networks``
        used when present); rows with ``unit != -1`` are ignored.
    predictions : DataFrame
        Columns ``layer, statistic, prediction`` (``assumption`` optional; and
        ``numerical_error``, the prediction's numerical uncertainty, which the test adds to
        the standard error in quadrature: z = (estimate − prediction)/√(SE² + ε²)).
    alpha : float
        Family-wise (Holm) or false-discovery (BH) level, in (0, 1). Rows whose estimate or
        standard error is not finite get the verdict ``"undefined"`` and stay out of the family.
    correction : str
        Any ``statsmodels.stats.multitest.multipletests`` method: ``"holm"``, ``"fdr_bh"``,
        ``"bonferroni"``, …
    rel_tol : float
        Rows with |estimate/prediction − 1| ≤ rel_tol agree whatever their p-value.
    keys : tuple of str
        Join keys (add sweep parameters to compare many points at once).

    Returns
    -------
    DataFrame
        Columns :data:`COLUMNS` (plus any extra key columns): ``rel_error`` =
        estimate/prediction − 1, ``z_score``, ``p_value``, ``p_adjusted``, ``verdict`` ∈
        {``"agrees"``, ``"disagrees"``, ``"undefined"``, ``"undefined (k of M networks
        excluded)"``, ``"no verdict"``}: a row whose estimate excluded overflowed networks
        (``n_overflow`` > 0 in the estimates) gets no verdict, since the surviving networks are
        a biased sample; rows whose ``assumption`` is in :data:`NO_VERDICT` are shown but not
        tested. Both stay out of the multiple-testing family, like ``"undefined"``. Rows whose
        prediction is missing or not finite are dropped (theory does not cover every
        statistic); rows with zero standard error are tested exactly (agree only if equal).
    """
    if hasattr(estimates, "per_layer"):
        n_overflow = int(getattr(estimates, "n_overflow", 0) or 0)
        estimates = estimates.per_layer()
        if n_overflow:
            estimates = estimates.assign(n_overflow=n_overflow)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if rel_tol < 0 or not np.isfinite(rel_tol):
        raise ValueError(f"rel_tol must be a finite number >= 0, got {rel_tol}")
    keys = list(keys)
    for name, df, need in (
        ("estimates", estimates, keys + ["estimate", "std_error"]),
        ("predictions", predictions, keys + ["prediction"]),
    ):
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise ValueError(f"{name} lacks columns {missing}; it has {list(df.columns)}")
    est = estimates
    if "unit" in est.columns:
        est = est[est["unit"] == -1]
    extra_pred = [
        "prediction",
        "assumption",
        "prediction_infinite_width",
        "testable",
        "note",
        "numerical_error",
    ]
    pred = predictions[[c for c in predictions.columns if c in keys + extra_pred]]
    if pred.duplicated(subset=keys).any():
        raise ValueError(
            "predictions hold more than one row per "
            f"({', '.join(keys)}) (e.g. theory.predict(..., finite_width=True) gives the "
            "infinite-width and the finite-width rows): pass theory.for_verdicts(predictions), "
            "which keeps the most complete one per row"
        )
    # A saved results table already has theory columns: the predictions given here replace them.
    stale = [c for c in extra_pred + COLUMNS[7:] if c in est.columns and c not in keys]
    est = est.drop(columns=stale)
    df = est.merge(pred, on=keys, how="inner")
    # NaN: theory does not cover the row (dropped); ±inf: the prediction overflowed (kept,
    # verdict "undefined" below, so an exploding network is visible rather than dropped).
    df = df[~np.isnan(df["prediction"].astype(float))].reset_index(drop=True)
    if df.empty:
        raise ValueError("estimates and predictions share no (layer, statistic) rows to compare")
    if "assumption" not in df:
        df["assumption"] = ""
    diff = df["estimate"] - df["prediction"]
    se = df["std_error"].to_numpy(dtype=float)
    if "numerical_error" in df:
        # The prediction's own numerical uncertainty (theory.predict) adds to the Monte Carlo
        # error in quadrature: a verdict tests the assumption, not the quadrature.
        err = np.nan_to_num(df["numerical_error"].to_numpy(dtype=float), nan=0.0)
        se = np.sqrt(se * se + err * err)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff == 0, 0.0, np.inf))
        # A prediction that is zero (or rounding noise around zero, relative to the estimate and
        # its error) has no meaningful relative error.
        pred_ = df["prediction"].to_numpy(dtype=float)
        scale = np.maximum(np.abs(df["estimate"].to_numpy(dtype=float)), se)
        rel = np.where(np.abs(pred_) > 1e-9 * scale, df["estimate"] / pred_ - 1, np.nan)
    dof = (df["n_networks"].to_numpy() - 1) if "n_networks" in df else np.full(len(df), np.inf)
    # Networks excluded for overflow leave a survivor-biased sample (the largest δ are the ones
    # dropped): such rows cannot confirm or refute theory, whatever their p-value.
    excluded = (
        np.nan_to_num(df["n_overflow"].to_numpy(dtype=float), nan=0.0).astype(np.int64)
        if "n_overflow" in df
        else np.zeros(len(df), dtype=np.int64)
    )
    # An estimate that is not finite (e.g. log‖δ‖² = −inf where a ReLU layer died) or has no
    # standard error cannot be tested: it is "undefined", kept out of the multiple-testing family.
    finite = (
        np.isfinite(df["estimate"].to_numpy(dtype=float))
        & np.isfinite(se)
        & np.isfinite(df["prediction"].to_numpy(dtype=float))
        & (excluded == 0)
    )
    valid = finite.copy()
    no_verdict = df["assumption"].isin(NO_VERDICT).to_numpy().copy()
    if "testable" in df:  # theory says the row is shown, not judged (see theory.for_verdicts)
        no_verdict |= ~df["testable"].fillna(True).astype(bool).to_numpy()
    valid &= ~no_verdict
    p = np.full(len(df), np.nan)
    p_adj = np.full(len(df), np.nan)
    p[valid] = 2 * stats.t.sf(np.abs(z[valid]), np.maximum(dof[valid], 1))
    if valid.any():
        p_adj[valid] = multipletests(p[valid], alpha=alpha, method=correction)[1]
    df["rel_error"] = rel
    # an empirical row keeps its z-score for reference, but no p-value and no verdict
    df["z_score"] = np.where(valid | (no_verdict & finite), z, np.nan)
    df["p_value"] = p
    df["p_adjusted"] = p_adj
    ok = (p_adj > alpha) | (np.abs(np.nan_to_num(rel, nan=np.inf)) <= rel_tol)
    verdict = np.where(
        valid, np.where(ok, "agrees", "disagrees"), np.where(no_verdict, "no verdict", "undefined")
    ).astype(object)
    if "n_networks" in df:
        total = df["n_networks"].to_numpy() + excluded
        for i in np.flatnonzero(excluded > 0):
            verdict[i] = f"undefined ({excluded[i]} of {total[i]} networks excluded)"
    df["verdict"] = verdict.astype(str)
    for c in ("ci_low", "ci_high"):
        if c not in df:
            df[c] = np.nan
    extra = [c for c in keys if c not in COLUMNS]
    rest = [c for c in df.columns if c not in COLUMNS and c not in extra]
    return df[extra + COLUMNS + rest]


def family_verdicts(table: pd.DataFrame, *, alpha: float = 0.01, correction: str = "holm"):
    """Verdicts with one multiple-testing family: every judged row of ``table``.

    A sweep's report makes one claim per row over all its points, so the p-values of every
    row with a verdict (``agrees``/``disagrees``) are adjusted together; with a family per
    point, a sweep of P points at level α would show about P·α false ``disagrees`` if every
    prediction held. Rows without a verdict are left as they are.

    Parameters
    ----------
    table : DataFrame
        Rows of :func:`compare` (columns ``p_value``, ``verdict``), e.g. a sweep's table.
    alpha : float
        Family-wise level.
    correction : str
        A :data:`CORRECTIONS` method.

    Returns
    -------
    DataFrame
        ``table`` with ``p_adjusted`` and ``verdict`` recomputed over the family.
    """
    if correction not in CORRECTIONS:
        raise ValueError(
            f"unknown correction {correction!r}; valid methods are: {', '.join(CORRECTIONS)}"
        )
    if "p_value" not in table or "verdict" not in table:
        return table
    judged = table["verdict"].isin(["agrees", "disagrees"]) & table["p_value"].notna()
    if not judged.any():
        return table
    table = table.copy()
    adj = multipletests(
        table.loc[judged, "p_value"].to_numpy(float), alpha=alpha, method=correction
    )
    table.loc[judged, "p_adjusted"] = adj[1]
    table.loc[judged, "verdict"] = np.where(adj[1] > alpha, "agrees", "disagrees")
    return table


def summarize(table: pd.DataFrame) -> str:
    """One-paragraph plain-language summary of a :func:`compare` table."""
    verdicts = table["verdict"].astype(str)
    excluded = verdicts.str.startswith("undefined (")
    undefined = int((verdicts == "undefined").sum())
    unjudged = int((verdicts == "no verdict").sum())
    n_excluded = int(excluded.sum())
    n = len(table) - undefined - unjudged - n_excluded
    agree = int((verdicts == "agrees").sum())
    text = f"Theory agrees with Monte Carlo in {agree} of {n} rows."
    if n_excluded:
        why = sorted(set(verdicts[excluded].str.slice(len("undefined ("), -1)))
        text += (
            f" {n_excluded} rows have no verdict because networks overflowed and were excluded "
            f"({'; '.join(why)}): the survivors are a biased sample."
        )
    if unjudged:
        empirical = int(((verdicts == "no verdict") & table["assumption"].isin(NO_VERDICT)).sum())
        if empirical:
            text += f" {empirical} rows carry an empirical fit and get no verdict."
        if unjudged > empirical:
            # Group the rest by the reason theory gives (the note), statistics named.
            rest = table[(verdicts == "no verdict") & ~table["assumption"].isin(NO_VERDICT)]
            notes = (
                rest["note"].fillna("").astype(str) if "note" in rest else pd.Series("", rest.index)
            )
            generic = "infinite-width theory whose finite-width (1/n) term is not derived"
            for note, g in rest.groupby(notes.where(notes != "", generic), sort=True):
                stats_ = ", ".join(sorted(set(g["statistic"].astype(str))))
                reason = note
                if note.startswith("infinite-width theory"):
                    reason = (
                        "infinite-width theory whose finite-width (1/n) term is derived but not "
                        "resolved here (its error control failed or the kernel overflows)"
                        if "not resolved" in note
                        else generic
                    )
                text += f" {len(g)} rows ({stats_}) have no verdict: {reason}."
    if undefined:
        text += (
            f" {undefined} rows are undefined (estimate or prediction not finite, e.g. dead ReLU"
            " layers or an exploding network)."
        )
    bad = table[table["verdict"] == "disagrees"]
    if not bad.empty:
        parts = []
        for stat, g in bad.groupby("statistic", sort=True):
            layers = _ranges(sorted(int(v) for v in g["layer"].unique()))
            worst = g.loc[g["z_score"].abs().idxmax()]
            how = ", ".join(sorted({str(a) for a in g["assumption"].dropna() if str(a)}))
            parts.append(
                f"{stat}{f' [{how}]' if how else ''} at layer(s) {layers} "
                f"(largest gap at layer {int(worst['layer'])}: "
                + (
                    f"relative error {worst['rel_error']:+.1%}, "
                    if np.isfinite(worst["rel_error"])
                    else ""
                )
                + f"z = {worst['z_score']:.1f})"
            )
        text += " Disagreements: " + "; ".join(parts) + "."
    return text


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 5]`` → ``"1–3, 5"``."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}–{v}")
            start = None
    return ", ".join(parts)


def _unpickle_compare():
    """:func:`compare` itself: what ``deltastats.compare`` pickles to when it is the module
    (after ``import deltastats.compare``), so joblib workers receive the function."""
    return compare
