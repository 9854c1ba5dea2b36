"""suggest_allocation: two-stage advice from the variance components of the statistic's own
per-network summary (not those of δ), checked against exact (Wick) components and by running
the advised design."""

import numpy as np
import pytest
from scipy import stats

import deltastats as ds
from deltastats import estimators as E
from deltastats import targets

# -- exact components on a linear network --------------------------------------------------------
# Widths (n0, n1, 1), linear activations, no biases, μ_w = 0, W⁽ˡ⁾_ij ~ N(0, σ²/n_{l−1}),
# x ~ N(0, I), zero targets. With w = W⁽²⁾ (one row) and a = ‖w‖² = (σ²/n1)·χ²_{n1}:
#   δ⁽²⁾ = g = w W⁽¹⁾ x ~ N(0, v) given the network, v = ‖W⁽¹⁾ᵀwᵀ‖² = (σ²a/n0)·χ²_{n0} given w;
#   δ⁽¹⁾ = wᵀ g, so s⁽¹⁾ = ‖δ⁽¹⁾‖²/n1 = g²·a/n1 and s⁽²⁾ = g².
# Given the network s = (scale)·g² has mean (scale)·v and variance 2·(scale)²·v², hence
#   layer 2: θ = E v,        σ²_B = Var v,            σ²_W = 2 E v²;
#   layer 1: θ = E[va]/n1,   σ²_B = Var(va)/n1²,      σ²_W = 2 E[(va)²]/n1²,
# with E[v|a] = σ²a, E[v²|a] = σ⁴a²(1 + 2/n0) and E aᵏ = σ²ᵏ Π_{i<k}(n1 + 2i)/n1ᵏ.
# E[δ|network] = 0 (δ is odd in x), so the icc of δ itself is 0: the old rule's B* was ∞.
N0, N1, SIGMA, BATCH = 16, 8, 1.3, 16
LIN = ds.MLP((N0, N1, 1), activation="linear", sigma_w=SIGMA)
C_NET, C_IN = 1.0, 0.01  # c_net/c_in = 100


def _wick_components():
    """{layer: (θ, σ²_B, σ²_W)} of s = ‖δ⁽ˡ⁾‖²/n_l (per-input quantity of pooled delta_sq)."""
    s2 = SIGMA**2
    ea = [1.0]
    for k in range(1, 5):
        ea.append(ea[-1] * s2 * (N1 + 2 * (k - 1)) / N1)
    f = 1 + 2 / N0
    ev, ev2 = s2 * ea[1], s2 * s2 * f * ea[2]  # E v, E v²
    eva, eva2 = s2 * ea[2], s2 * s2 * f * ea[4]  # E[va], E[(va)²]
    return {
        1: (eva / N1, (eva2 - eva**2) / N1**2, 2 * eva2 / N1**2),
        2: (ev, ev2 - ev**2, 2 * ev2),
    }


@pytest.fixture(scope="module")
def pilot():
    return ds.estimate(LIN, n_networks=2000, batch=BATCH, seed=0)


def test_delta_sq_icc_is_the_anova_of_the_per_input_norm():
    """The new row and the log-norm route are the one-way ANOVA of s_b = ‖δ_b‖²/n_l (resp.
    log s_b) over networks, computed here directly from a trace."""
    net = ds.MLP((3, 5, 2), activation="tanh", mu_w=0.7, sigma_w=1.3, sigma_b=0.2)
    law_y = targets.constant(0.5)
    M, B, seed = 150, 7, 3
    est = ds.estimate(net, targets=law_y, n_networks=M, batch=B, seed=seed)
    params = net.sample(M, seed)
    x = ds.inputs.gaussian().sample(3, B, seed, n_networks=M)
    tr = ds.backprop(net, params, x, law_y.sample(x, 2, seed))

    def anova_icc(y):  # y (M, B)
        s_w = y.var(axis=1, ddof=1).mean()
        s_b = y.mean(axis=1).var(ddof=1) - s_w / B
        return s_b / (s_b + s_w)

    for layer in (1, 2):
        s = (tr.delta[layer - 1] ** 2).mean(axis=-1)
        got = est.result("delta_sq_icc", layer).estimate
        assert got == pytest.approx(anova_icc(s), rel=1e-9)
        adv = E.suggest_allocation(est, 1.0, 1.0, statistic="log_delta_norm_sq_mean")
        row = adv[adv.layer == layer].iloc[0]
        assert row.exact and row.icc == pytest.approx(anova_icc(np.log(s)), rel=1e-8)


def test_advice_matches_the_exact_two_stage_optimum(pilot):
    """B* = √((c_net/c_in)·σ²_W/σ²_B) with Wick's components, within 3 standard errors of the
    icc (propagated: dB*/B* = ½·dρ/(ρ(1 − ρ))) plus 1 for rounding."""
    truth = _wick_components()
    adv = E.suggest_allocation(pilot, C_NET, C_IN, rel_half_width=0.03)
    for layer, (theta, s_b, s_w) in truth.items():
        row = adv[adv.layer == layer].iloc[0]
        assert row.exact and row.icc_source == "delta_sq_icc" and not row.clipped
        rho = s_b / (s_b + s_w)
        se = pilot.result("delta_sq_icc", layer).standard_error
        assert abs(row.icc - rho) <= 3 * se, (layer, row.icc, rho, se)
        b_true = np.sqrt(C_NET / C_IN * s_w / s_b)
        tol = 3 * 0.5 * se / (rho * (1 - rho)) * b_true + 1
        assert abs(row.inputs_per_network - b_true) <= tol, (layer, row.inputs_per_network, b_true)
        # The estimand itself (sanity of the derivation), and δ's own icc ≈ 0 (the old rule).
        est = pilot.result("delta_sq", layer)
        assert abs(est.estimate - theta) < 4 * est.standard_error
        assert abs(pilot.result("icc", layer).estimate) < 0.02


def test_advised_design_reaches_the_target_precision(pilot):
    """Running the advised (B*, M*) gives a relative CI half-width within ±30% of the target.
    (The pilot's per-network variance of a right-skewed δ² is itself uncertain by ~10% here,
    its SE by ~5%; the run's own SE by ~2%: ±30% is a > 3σ band.) The predicted M* also
    agrees with the M* of the exact components at the same B."""
    r = 0.03
    truth = _wick_components()
    adv = E.suggest_allocation(pilot, C_NET, C_IN, rel_half_width=r)
    for _, row in adv.iterrows():
        layer, b, m = int(row.layer), int(row.inputs_per_network), int(row.n_networks)
        run = ds.estimate(LIN, n_networks=m, batch=b, seed=11)
        res = run.result("delta_sq", layer)
        achieved = (res.confidence_interval[1] - res.estimate) / abs(res.estimate)
        assert 0.7 * r <= achieved <= 1.3 * r, (layer, b, m, achieved)
        theta, s_b, s_w = truth[layer]
        z = stats.norm.ppf(0.975)
        m_true = (z / r) ** 2 * (s_b + s_w / b) / theta**2
        assert m == pytest.approx(m_true, rel=0.3), (layer, m, m_true)


def test_default_experiment_gets_sane_advice():
    """The reported case: tanh, 10 × 128, σ_w² = 1.5, zero targets. δ's icc is ≈ 0 by symmetry
    (the old advice was B* ≈ 3·10⁵ inputs per network); δ²'s components give B* of a few tens."""
    net = ds.MLP((128,) * 10 + (1,), sigma_w=1.5**0.5)
    est = ds.estimate(net, n_networks=128, batch=64, seed=2)
    adv = E.suggest_allocation(est, 1e-3, 1e-5, rel_half_width=0.01)
    assert adv.layer.tolist() == list(range(1, 11))
    assert adv.exact.all() and not adv.clipped.any() and (adv.note == "").all()
    assert adv.inputs_per_network.between(10, 100).all(), adv.inputs_per_network.tolist()
    assert adv.n_networks.between(1000, 100_000).all(), adv.n_networks.tolist()
    assert (est.per_layer("icc").estimate.abs() < 0.02).all()
    # At B* the cost is below that of the pilot's B for the same precision.
    cost_current = adv.n_networks_at_current * (1e-3 + 64 * 1e-5)
    assert (adv.cost <= cost_current).all()

    # A statistic without exact components falls back to δ's icc: flagged, and clipped.
    fb = E.suggest_allocation(
        est, 1e-3, 1e-5, rel_half_width=0.01, statistic="delta_var", max_inputs_per_network=512
    )
    assert not fb.exact.any() and fb.note.str.contains("approximate").all()
    assert (fb.icc_source == "icc (of δ, approximate)").all()
    assert (fb.inputs_per_network <= 512).all() and fb.clipped.any()
    assert fb[fb.clipped].note.str.contains("clipped").all()
    assert (fb[fb.clipped].inputs_per_network == 512).all()
    # The batch-mean gradient's estimand depends on B: B is kept.
    gw = E.suggest_allocation(est, 1e-3, 1e-5, rel_half_width=0.05, statistic="grad_w_sq")
    assert (gw.inputs_per_network == 64).all() and gw.note.str.contains("depends on B").all()


def test_min_networks_floor_lowers_b_instead(pilot):
    """A loose target would need fewer than min_networks networks at B*: M is raised to
    min_networks and B lowered to the cheapest b that still meets the target, which a run
    confirms."""
    r = 0.3
    free = E.suggest_allocation(pilot, C_NET, C_IN, rel_half_width=r, min_networks=2)
    adv = E.suggest_allocation(pilot, C_NET, C_IN, rel_half_width=r)
    assert (free.n_networks < E.MIN_NETWORKS).all()
    assert (adv.n_networks == E.MIN_NETWORKS).all() and adv.note.str.contains("min_networks").all()
    assert (adv.inputs_per_network <= free.inputs_per_network).all()
    for _, row in adv.iterrows():
        run = ds.estimate(
            LIN, n_networks=int(row.n_networks), batch=int(row.inputs_per_network), seed=12
        )
        res = run.result("delta_sq", int(row.layer))
        achieved = (res.confidence_interval[1] - res.estimate) / abs(res.estimate)
        assert achieved <= 1.3 * r, (row.layer, achieved)


def test_allocation_arguments_are_validated(pilot):
    with pytest.raises(ValueError, match="max_inputs_per_network"):
        E.suggest_allocation(pilot, 1.0, 1.0, max_inputs_per_network=0)
    with pytest.raises(ValueError, match="min_networks"):
        E.suggest_allocation(pilot, 1.0, 1.0, min_networks=1)
    with pytest.raises(ValueError, match="rel_half_width"):
        E.suggest_allocation(pilot, 1.0, 1.0, rel_half_width=0.0)
