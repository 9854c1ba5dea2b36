"""The exact input law: every prediction is the average over x of the per-input prediction.

Given the input x, the first-layer pre-activations of a network with Gaussian weights are
exactly Gaussian, z⁽¹⁾_j | x ~ N(m₁(x), v₁(x)) with

    m₁ = μ_w⁽¹⁾ x̄ + μ_b⁽¹⁾,     v₁ = σ_w⁽¹⁾² ρ + σ_b⁽¹⁾²,     x̄ = Σ_i x_i/n₀,  ρ = ‖x‖²/n₀,     (I1)

so every per-input recursion (mean field forward, the Gaussian backward map) starts from
(m₁, v₁), a function of (x̄, ρ) only. The statistics the estimators pool over networks *and*
inputs are then averages over the law of (x̄, ρ):

    E z = E_x[m_l],   Var z = E_x[v_l] + Var_x(m_l) = E_x[v_l + m_l²] − (E_x m_l)²,
    E δ = E_x[D_l],   E δ² = E_x[S_l],   E δ_jδ_k = E_x[C_l]                                (I2)

(the law of total variance). Reducing the input law to its mean — starting the recursion at
(μ_w E x̄ + μ_b, σ_w² E ρ + σ_b²) — is exact only where the per-input map is affine in
(x̄, x̄², ρ), e.g. linear networks, and misses Var_x(μ_w x̄) in Var z⁽¹⁾ otherwise.

The average is a quadrature over the rule :meth:`~deltastats.model.inputs.InputLaw.summary_rule`
of the input law, with error control as in :mod:`~deltastats.theory.quadrature`: the result at
degree d is compared with the result at the previous degree of :data:`DEGREES` and the degree
is raised while they differ.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from ..model.inputs import InputLaw, SummaryRule
from ..model.networks import MLP
from .quadrature import QuadratureWarning

#: Degrees (nodes per dimension) tried by :func:`adaptive`, in order (ratio ≈ 1.5).
DEGREES = (4, 6, 9, 13, 19, 28, 42)
#: Tolerance on the pooled keys (logs and standardised means) between successive degrees.
#: The returned result is the finer one. Its error is below RTOL, and far below it for wide
#: inputs (≲ 10⁻⁶ at n₀ ≥ 16); it is of order RTOL only for n₀ of a few units: the per-input
#: maps E_t f(m₁ + √v₁ t) are not analytic at v₁ = 0, i.e. just below ρ = 0 when σ_b is
#: small, where the law of ρ (Gamma with shape n₀/2) puts mass when n₀ is small, so there
#: the Gauss rules converge slowly.
RTOL = 1e-4


def input_rule(net: MLP, inputs: InputLaw, degree: int | tuple[int, int]) -> SummaryRule:
    """The (x̄, ρ) rule of ``inputs`` for ``net`` (the marginal of ρ when μ_w⁽¹⁾ = 0).

    Raises
    ------
    ValueError
        Naming ``inputs`` when it is not an input law or has no (x̄, ρ) law.
    """
    if not isinstance(inputs, InputLaw):
        raise ValueError(
            "inputs must be an input law such as deltastats.inputs.gaussian(1.0), got "
            f"{type(inputs).__name__}"
        )
    with_mean = net.layer_mu_w[0] != 0
    try:
        rule = inputs.summary_rule(net.widths[0], degree, with_mean=with_mean)
    except NotImplementedError as err:
        raise ValueError(
            f"inputs: {type(inputs).__name__} has no (x̄, ρ) law, and theory averages every "
            f"prediction over it ({err}); implement summary_rule or use inputs.from_array(X)"
        ) from None
    if not isinstance(rule, SummaryRule):
        raise ValueError(f"inputs: summary_rule must return a SummaryRule, got {type(rule)}")
    if np.any(rule.rho < 0) or np.any(rule.weights < 0) or not np.isclose(rule.weights.sum(), 1):
        raise ValueError("inputs: summary_rule gave ρ < 0 or weights that are not a law")
    return rule


def first_layer(net: MLP, rule: SummaryRule) -> tuple[np.ndarray, np.ndarray]:
    """(m₁, v₁) at the nodes of ``rule``, (I1); shapes (K,)."""
    sw, sb = net.layer_sigma_w[0], net.layer_sigma_b[0]
    mw, mb = net.layer_mu_w[0], net.layer_mu_b[0]
    return mw * rule.xbar + mb, sw**2 * rule.rho + sb**2


def log_mean(logs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """log Σ_k w_k e^{logs[k]} over axis 0 (weighted log-sum-exp; −inf stays −inf)."""
    logs = np.asarray(logs, dtype=np.float64)
    top = np.max(logs, axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.tensordot(w, np.exp(logs - safe), axes=(0, 0))
        return np.where(np.isfinite(top), safe + np.log(s), top)


def scaled_mean(x: np.ndarray, logscale: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Σ_k w_k x_k e^{logscale_k} over axis 0, without overflowing on the way."""
    top = np.max(logscale, axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.tensordot(w, x * np.exp(logscale - safe), axes=(0, 0))
        out = s * np.exp(safe)
    return np.where(s == 0, 0.0, out)


def pool_forward(a: np.ndarray, logv: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled (a, log v) per layer from per-node (a, log v), shapes (K, L) → (L,), by (I2).

    Var z = E_x[v] + E_x[(m − E_x m)²], computed in the units e^{max log v} so that neither
    growth nor cancellation spoils it.
    """
    top = np.max(logv, axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        rel = np.exp(logv - safe)  # v_k/V
        m = a * np.sqrt(rel)  # m_k/√V
        mbar = w @ m
        var = w @ rel + w @ (m - mbar) ** 2
        logv_pooled = safe + np.log(var)
        a_pooled = np.where(var > 0, mbar / np.sqrt(var), 0.0)
    return np.where(np.isfinite(a_pooled), a_pooled, 0.0), logv_pooled


def adaptive(
    evaluate: Callable[[SummaryRule], tuple[object, np.ndarray]],
    net: MLP,
    inputs: InputLaw,
    degree: int | tuple[int, int] | None = None,
):
    """Run ``evaluate(rule)`` on input-law rules of increasing degree until the key settles.

    ``evaluate`` returns ``(result, key)``; ``key`` is a vector of pooled quantities of order
    one (logs of variances, standardised means). With ``degree`` given, that rule is used as
    is. Otherwise each dimension of the rule — first r = ρ − x̄², then x̄ — is refined in
    turn through :data:`DEGREES` until the key moves by at most :data:`RTOL` (absolute: a
    difference of logs is a relative error), and the finer result is returned. A dimension
    that does not change the rule (the empirical rows, the sphere's fixed ρ, x̄ when
    μ_w⁽¹⁾ = 0) costs nothing. A :class:`QuadratureWarning` says when the last degree still
    moved.
    """
    if degree is not None:
        return evaluate(input_rule(net, inputs, degree))[0]
    level = [0, 0]
    rule = input_rule(net, inputs, (DEGREES[0], DEGREES[0]))
    cur = evaluate(rule)
    for dim in (1, 0):
        settled = False
        while level[dim] + 1 < len(DEGREES):
            level[dim] += 1
            new_rule = input_rule(net, inputs, (DEGREES[level[0]], DEGREES[level[1]]))
            if _same_rule(new_rule, rule):
                level[dim] -= 1
                settled = True
                break
            new = evaluate(new_rule)
            k0, k1 = np.asarray(cur[1], float), np.asarray(new[1], float)
            ok = np.isfinite(k0) & np.isfinite(k1)
            rule, cur = new_rule, new
            if np.all(np.abs(k1[ok] - k0[ok]) <= RTOL):
                settled = True
                break
        if not settled:
            warnings.warn(
                f"input-law average did not settle to {RTOL:g} at degree {DEGREES[-1]}; "
                "the prediction may carry a small quadrature error",
                QuadratureWarning,
                stacklevel=3,
            )
    return cur[0]


def _same_rule(a: SummaryRule, b: SummaryRule) -> bool:
    return (
        a.xbar.shape == b.xbar.shape
        and np.array_equal(a.xbar, b.xbar)
        and np.array_equal(a.rho, b.rho)
        and np.array_equal(a.weights, b.weights)
    )
