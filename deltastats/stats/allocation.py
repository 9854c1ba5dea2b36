"""Two-stage allocation: how many inputs per network, and how many networks, for a target
precision at least cost (Cochran 1977, §10).

References
----------
Cochran, W. G. (1977). *Sampling Techniques*, 3rd ed., ch. 10 (two-stage sampling). Wiley.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .. import checks
from .results import MIN_NETWORKS, Estimates
from .statistics import check_statistics

#: Default cap on the suggested inputs per network (:func:`suggest_allocation`).
MAX_INPUTS_PER_NETWORK = 4096

#: Statistic → table row giving the intraclass correlation ρ of its per-network summary
#: exactly (unbiased ANOVA variance components from the accumulated features).
_ALLOCATION_ICC = {
    "delta_mean": "icc",  # summary mean_b ȳ_b, ȳ_b = mean_j δ_bj: the pooled icc row
    "delta_sq": "delta_sq_icc",  # summary mean_b s_b, s_b = ‖δ_b‖²/n_l
    "delta_norm_sq": "delta_sq_icc",
    "log_delta_norm_sq_mean": "log_delta_norm_sq_var",  # from (T, V), see suggest_allocation
}
#: Statistics whose estimand itself depends on B: B is not a free design parameter for them.
_FIXED_BATCH = ("grad_w_sq", "grad_w_var", "design_effect")


def _networks_for(k: float, confidence: float) -> int:
    """Smallest m ≥ 2 with t_{m−1,(1+γ)/2}·k/√m ≤ 1 (k = per-network SD / target half-width).

    t_{m−1}/√m decreases in m, so start at the normal bound ⌈(z·k)²⌉ and search upward
    (doubling, then bisection); −1 if k is not finite.
    """
    if not np.isfinite(k):
        return -1
    alpha = 0.5 * (1 + confidence)

    def ok(m):
        return stats.t.ppf(alpha, m - 1) * k <= np.sqrt(m)

    lo = max(2, int(np.ceil((stats.norm.ppf(alpha) * k) ** 2)))
    if ok(lo):
        return lo
    hi = 2 * lo
    while not ok(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: not ok(lo), ok(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _allocation_icc(grp: pd.DataFrame, statistic: str, M: int, B: int):
    """(ρ, source, exact, note) for one layer's pooled rows ``grp`` (see suggest_allocation)."""
    rows = grp.set_index("statistic")
    if statistic in _FIXED_BATCH:
        return (
            np.nan,
            "none",
            False,
            f"the estimand of {statistic} depends on B itself: B kept at the pilot's {B}",
        )
    src = _ALLOCATION_ICC.get(statistic)
    if src == "log_delta_norm_sq_var" and src in rows.index and B >= 2:
        # T = total variance of t (unbiased, eq. (V)); V = M·SE² the between-network variance
        # of the per-network mean of t: E T = σ²_B + σ²_W, E V = σ²_B + σ²_W/B.
        T = float(rows.loc[src, "estimate"])
        V = M * float(rows.loc[statistic, "std_error"]) ** 2
        s_w = B / (B - 1) * (T - V)
        s_b = V - s_w / B
        rho = s_b / (s_b + s_w) if s_b + s_w > 0 else np.nan
        return rho, "log_delta_norm_sq_var", True, ""
    if src is not None and src != "log_delta_norm_sq_var" and src in rows.index:
        return float(rows.loc[src, "estimate"]), src, True, ""
    rho = float(rows.loc["icc", "estimate"]) if "icc" in rows.index else np.nan
    why = (
        f"row {src!r} not in the estimates"
        if src is not None and B >= 2
        else "no exact variance components for this statistic"
    )
    return (
        rho,
        "icc (of δ, approximate)",
        False,
        f"{why}: ρ of the layer-mean δ used instead (approximate; can be far off)",
    )


def suggest_allocation(
    estimates: Estimates,
    cost_per_network: float,
    cost_per_input: float,
    *,
    rel_half_width: float = 0.05,
    statistic: str = "delta_sq",
    max_inputs_per_network: int = MAX_INPUTS_PER_NETWORK,
    min_networks: int = MIN_NETWORKS,
) -> pd.DataFrame:
    """Two-stage sampling advice: inputs per network and networks for a target precision.

    Model. θ̂ = (1/M) Σ_m θ̂_m with θ̂_m the per-network summary of the statistic (a mean over
    the network's B inputs of a per-input quantity Y_b) and

        Var(θ̂_m) = σ²_B + σ²_W/B,   σ²_B = Var_m E[Y|m],   σ²_W = E_m Var(Y|m),

    ρ = σ²_B/(σ²_B + σ²_W). With cost C = M·(c_net + B·c_in) the optimum (Cochran 1977, §10) is

        B* = √( (c_net/c_in) · σ²_W/σ²_B ) = √( (c_net/c_in) · (1 − ρ)/ρ ).

    ρ must be that of the statistic's **own** per-input quantity Y (``icc_source`` column):

    * ``delta_sq``, ``delta_norm_sq`` (pooled): Y = s = ‖δ⁽ˡ⁾‖²/n_l (the factor n_l of
      ``delta_norm_sq`` leaves relative errors unchanged), the ``delta_sq_icc`` row
      (ANOVA on the per-network features (s̄, mean_b s², s̄²): σ̂²_W = B/(B−1)·E_m[mean_b s² −
      s̄²], σ̂²_B = sample variance of s̄_m − σ̂²_W/B). The within part is the variance over
      inputs of the *unit average* s, so it includes the covariances between units;
    * ``delta_mean`` (pooled): Y = ȳ = mean_j δ_j, the ``icc`` row;
    * ``log_delta_norm_sq_mean``: Y = t = log s, from the table: σ̂²_W = B/(B−1)·(T − V),
      σ̂²_B = V − σ̂²_W/B, with T = ``log_delta_norm_sq_var`` (unbiased total variance) and
      V = M·SE² (the between-network variance of the per-network means);
    * ``grad_w_sq``, ``grad_w_var``, ``design_effect``: the estimand depends on B, so B is
      kept at the pilot's value and only M is advised;
    * any other statistic: no exact components are available; ρ of the layer-mean δ is used
      instead, ``exact`` is False and ``note`` says so. E.g. ``delta_var`` when E[δ]
      = 0 behaves like ``delta_sq``, whose row then gives the better advice.

    B* is rounded and clipped to [1, ``max_inputs_per_network``] (``clipped`` True, with a note;
    an estimated ρ ≤ 0 gives B* = ∞). Networks: with the measured per-network variance
    M·SE² at the pilot's B, Var(θ̂_m) at b inputs is M·SE²·V(b)/V(B), V(b) = ρ + (1 − ρ)/b (ρ
    clipped to [0, 1]), and M* is the smallest M with t_{M−1}·√(Var(θ̂_m)/M) ≤ r·|θ̂|. If that
    is below ``min_networks`` (intervals of skewed statistics need about
    :data:`MIN_NETWORKS`), M = ``min_networks`` and B is lowered to the smallest b meeting the
    target with them: the cheapest allocation subject to M ≥ ``min_networks`` (noted).
    ``n_networks_at_current`` is the M* at the pilot's B (no minimum applied).

    Parameters
    ----------
    estimates : Estimates
        A pilot run (all statistics; ``batch`` ≥ 2 so that σ²_B and σ²_W are identifiable).
    cost_per_network, cost_per_input : float
        c_net (drawing a network) and c_in (one input through it), any common unit.
    rel_half_width : float
        r, target CI half-width relative to |θ̂| (at the pilot's confidence level).
    statistic : str
        The statistic whose pooled layer rows set the precision target.
    max_inputs_per_network : int
        Upper limit of the advised B.
    min_networks : int
        Lower limit of the advised M.

    Returns
    -------
    DataFrame
        One row per layer: ``layer, statistic, icc`` (ρ used), ``inputs_per_network`` (B),
        ``n_networks`` (M), ``cost`` (M·(c_net + B·c_in)), ``current_inputs``,
        ``n_networks_at_current``, ``icc_source`` (row ρ came from), ``exact`` (ρ is that of
        the statistic's own summary), ``optimum_inputs`` (unrounded, unclipped B*),
        ``clipped`` (B* > ``max_inputs_per_network``), ``note``.
    """
    if not isinstance(estimates, Estimates):
        raise ValueError("estimates must be the Estimates returned by deltastats.estimate")
    cost_per_network = checks.positive_real("cost_per_network", cost_per_network)
    cost_per_input = checks.positive_real("cost_per_input", cost_per_input)
    rel_half_width = checks.positive_real("rel_half_width", rel_half_width)
    (statistic,) = check_statistics(statistic)
    max_inputs = checks.positive_int("max_inputs_per_network", max_inputs_per_network)
    min_networks = checks.integer("min_networks", min_networks, 2)
    t = estimates.table[estimates.table["unit"] == -1]
    if (t["statistic"] == statistic).sum() == 0:
        raise ValueError(f"estimates hold no per-layer rows of {statistic!r}")
    B = estimates.n_inputs
    M = estimates.n_networks
    conf = estimates.confidence
    ratio = cost_per_network / cost_per_input
    rows = []
    for layer, grp in t.groupby("layer"):
        if (grp["statistic"] == statistic).sum() == 0:
            continue
        r = grp[grp["statistic"] == statistic].iloc[0]
        rho, source, exact, note = _allocation_icc(grp, statistic, M, B)
        notes = [note] if note else []
        if statistic in _FIXED_BATCH or not np.isfinite(rho):
            b_raw = np.nan
            if statistic not in _FIXED_BATCH:
                notes.append(f"ρ undefined (no variation, or pilot B < 2): B kept at {B}")
        elif rho <= 0:
            b_raw = np.inf
            notes.append(f"estimated ρ = {rho:.3g} ≤ 0: between-network variance not resolved")
        else:
            b_raw = float(np.sqrt(ratio * max(1 - rho, 0.0) / rho))
        clipped = bool(b_raw == np.inf or (np.isfinite(b_raw) and round(b_raw) > max_inputs))
        if np.isnan(b_raw):
            b_opt = B
        elif clipped:
            b_opt = max_inputs
            notes.append(f"B* = {b_raw:.3g} clipped to max_inputs_per_network = {max_inputs}")
        else:
            b_opt = int(max(1, round(b_raw)))
        rho_c = float(np.clip(rho, 0.0, 1.0)) if np.isfinite(rho) else 1.0

        def var_ratio(b, rho_c=rho_c):  # Var(θ̂_m) at b inputs over that at the pilot's B
            return (rho_c + (1 - rho_c) / b) / (rho_c + (1 - rho_c) / B)

        with np.errstate(all="ignore"):
            target = rel_half_width * abs(float(r.estimate))
            sd2 = M * float(r.std_error) ** 2  # per-network variance at the pilot's B
            k_cur = np.sqrt(sd2) / target if target > 0 else np.inf
        m_cur = _networks_for(k_cur, conf)
        m_opt = _networks_for(k_cur * np.sqrt(var_ratio(b_opt)), conf)
        if 0 < m_opt < min_networks:
            # Cheapest allocation with M = min_networks: the smallest b with
            # t·√(sd2·var_ratio(b)/M) ≤ target, i.e. var_ratio(b) ≤ v_max.
            tq = stats.t.ppf(0.5 * (1 + conf), min_networks - 1)
            v_max = min_networks / (tq * k_cur) ** 2 * (rho_c + (1 - rho_c) / B)
            b_new = b_opt
            if v_max >= 1.0:
                b_new = 1
            elif v_max > rho_c:
                b_new = int(min(b_opt, max(1, np.ceil((1 - rho_c) / (v_max - rho_c) - 1e-9))))
            if statistic in _FIXED_BATCH or not np.isfinite(rho):
                b_new = b_opt
            notes.append(
                f"M* = {m_opt} < min_networks: M = {min_networks}, B = {b_new} (cheapest with "
                "that many networks)"
            )
            m_opt, b_opt = min_networks, b_new
        rows.append(
            {
                "layer": int(layer),
                "statistic": statistic,
                "icc": rho,
                "inputs_per_network": int(b_opt),
                "n_networks": m_opt,
                "cost": m_opt * (cost_per_network + b_opt * cost_per_input)
                if m_opt > 0
                else np.nan,
                "current_inputs": B,
                "n_networks_at_current": m_cur,
                "icc_source": source,
                "exact": exact,
                "optimum_inputs": b_raw,
                "clipped": clipped,
                "note": "; ".join(notes),
            }
        )
    return pd.DataFrame(rows)
