"""The Gaussian-assumption backward map: moments of δ⁽ˡ⁾ layer by layer, and the two-input
(cross-sample) moments the batch-mean weight gradient needs.

Assumption: every pre-activation z⁽ˡ⁾_j is Gaussian with the mean-field mean and variance,
and W⁽ˡ⁺¹⁾ is independent of δ⁽ˡ⁺¹⁾ (the infinite-width limit). E[δ_j] then follows from
Stein's identity (integration by parts) E[(z − μ) g(z)] = σ² E[g'(z)], which is what turns
the question "what is E[∂L/∂z]?" into Gaussian expectations of φ and φ'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.activations import Activation
from ..model.inputs import InputLaw
from ..model.inputs import gaussian as _gaussian_inputs
from ..model.losses import Loss, get_loss
from ..model.networks import MLP
from ..model.targets import TargetLaw
from ..model.targets import zeros as _zero_targets
from ._common import TheoryNotCovered, _std_moment, _std_moments
from .input_law import adaptive, log_mean, scaled_mean
from .meanfield import ForwardMoments, _check_net, _forward_at, _input_moments, forward_moments
from .quadrature import expect2


@dataclass(frozen=True)
class BackwardMoments:
    """Per-layer moments of δ⁽ˡ⁾ under the Gaussian assumption, l = 1 … L (index l−1).

    Attributes
    ----------
    delta_mean : ndarray, shape (L,)
        D_l = E[δ_j] (may be ±inf only if it overflows).
    log_delta_sq : ndarray, shape (L,)
        log S_l = log E[δ_j²] (always finite).
    log_delta_cross : ndarray, shape (L,)
        log |C_l|, C_l = E[δ_j δ_k], j ≠ k (same sample); ``delta_cross`` has the sign.
    hessian : ndarray, shape (L,)
        H_l = E[∂δ_j/∂z_j] = E[∂²L/∂z_j²], the diagonal of the loss Hessian.
    node_log_delta_sq : ndarray or None, shape (K, L)
        log E[δ_j² | x] at the K nodes of the input-law rule (the pooled values above are
        their averages, :mod:`~deltastats.theory.input_law` (I2)).
    """

    delta_mean: np.ndarray
    log_delta_sq: np.ndarray
    delta_cross: np.ndarray
    hessian: np.ndarray
    node_log_delta_sq: np.ndarray | None = None

    @property
    def delta_sq(self) -> np.ndarray:
        """S_l = E[δ_j²]."""
        with np.errstate(over="ignore"):
            return np.exp(self.log_delta_sq)

    @property
    def delta_var(self) -> np.ndarray:
        """Var δ_j = S_l − D_l², from the log scale (exact zero if δ is deterministic)."""
        with np.errstate(over="ignore", invalid="ignore"):
            rel = 1.0 - np.exp(2 * np.log(np.abs(self.delta_mean)) - self.log_delta_sq)
            out = np.exp(self.log_delta_sq) * np.maximum(rel, 0.0)
        return np.where(np.isnan(out), np.inf, out)


def _loss_and_targets(net: MLP, loss, targets) -> tuple[float, float]:
    lossf = get_loss(loss) if not isinstance(loss, Loss) else loss
    if lossf.name != "mse":
        raise TheoryNotCovered(
            f"theory supports loss='mse' (½‖g − y‖²) only, got {lossf.name!r}; compare "
            "cross-entropy runs with Monte Carlo alone"
        )
    targets = _zero_targets() if targets is None else targets
    if not isinstance(targets, TargetLaw):
        raise ValueError("targets must be a target law such as deltastats.targets.zeros()")
    mom = targets.moments(net.widths[-1])
    if mom is None:
        raise TheoryNotCovered(
            f"target law {type(targets).__name__} has no closed-form moments (a teacher's "
            "targets depend on the input); theory needs targets independent of the network, "
            "e.g. targets.constant(c) or targets.gaussian(s)"
        )
    return float(mom[0]), float(mom[1])


def backward_moments(
    net: MLP,
    inputs: InputLaw | None = None,
    targets: TargetLaw | None = None,
    loss: str | Loss = "mse",
    *,
    forward: ForwardMoments | None = None,
    degree: int | tuple[int, int] | None = None,
) -> BackwardMoments:
    """Gaussian-assumption backward recursion for E[δ], E[δ²], E[δ_jδ_k] and E[∂δ/∂z].

    Assumptions (state them when you quote a number):

    1. given the input x, z⁽ˡ⁾_j ~ N(m_l(x), v_l(x)) from :func:`forward_moments` (mean field,
       infinite width), and distinct units of a layer are independent given the layer's law;
       the recursion runs per input and the pooled moments are its averages over the input
       law, E δ = E_x D_l, E δ² = E_x S_l, … (:mod:`~deltastats.theory.input_law`, (I2));
    2. the gradient-independence assumption: W⁽ˡ⁺¹⁾ in the backward pass is independent of
       δ⁽ˡ⁺¹⁾ for second moments — except for the one Stein term below, which the
       assumption would lose and which is of the same order as the μ_w term in E[δ]
       (for Gaussian W, E[W_kj δ_k] = (μ_w/n_l)E[δ_k] + (σ_w²/n_l)E[h_j ∂δ_k/∂z_k] exactly);
    3. targets y independent of the inputs, with independent coordinates (mean μ_y,
       second moment s_y);
    4. no assumption on the output width: the readout's Stein term (the H terms below) is
       the complete n → ∞ limit for any ratio n_L/n_{L−1}, including a square readout;
    5. the common mode μ_w h̄ is stable: μ_w E[φ'(z)] < 1. Otherwise its O(1/√n)
       fluctuations grow layer by layer (tanh with μ_w = 3 breaks the ±symmetry of the mean;
       relu with μ_w = 1.5 is ≈ 10 % off at width 512, depth 5) and mean field fails.

    Finite width: the recursions are the n → ∞ limit, and their error is O(1/n) per layer;
    it grows with depth (ReLU with n_L = 1: E[δ⁽¹⁾²] above (B3) by tens of percent at width
    32). The main missing term is the forward–backward correlation that assumption 2 drops;
    it is derived exactly for bias-free ReLU with zero targets
    (:func:`~deltastats.theory.finite_width.relu_delta_sq`) and for linear networks
    (:func:`linear_exact`); elsewhere the backward 1/n terms are not derived, and no factor
    for them is applied.

    With r = n_{l+1}/n_l, σ² = σ_w⁽ˡ⁺¹⁾², μ = μ_w⁽ˡ⁺¹⁾, expectations over z ~ N(m_l, v_l),
    D = E[δ⁽ˡ⁺¹⁾_k], H = E[∂δ⁽ˡ⁺¹⁾_k/∂z_k], S = E[(δ⁽ˡ⁺¹⁾_k)²], C = E[δ_kδ_k'] (k ≠ k'),
    T = C + (S − C)/n_{l+1} (so that μ²r²T = (μ/n_l)² E[(Σ_k δ_k)²]):

        D_l = r[μ E[φ'] D + σ² E[φφ'] H]                                                  (B1)
        H_l = r[μ E[φ''] D + σ² (E[φφ''] + E[φ'²]) H]                                      (B2)
        S_l = E[φ'²](rσ² S + μ²r² T) + 2r²μσ² D H E[φφ'²] + r²σ⁴ H² E[φ²φ'²]              (B3)
        C_l = E[φ']² μ²r² T + 2r²μσ² D H E[φ'] E[φφ'] + r²σ⁴ H² E[φφ']²                  (B4)

    (E[φ''] and E[φφ''] by Gaussian integration by parts, so kinks are handled.) At the
    output, δ⁽ᴸ⁾ = (φ_out(z) − y)φ_out'(z):

        D_L = E[φφ'] − μ_y E[φ'],   H_L = E[φ'²] + E[φφ''] − μ_y E[φ''],
        S_L = E[φ²φ'²] − 2μ_y E[φφ'²] + s_y E[φ'²],   C_L = D_L²                       (B0)

    Carried in log scale (the (D, H) pair and the (S, C) pair each renormalised per layer).

    Parameters
    ----------
    net : MLP
    inputs : InputLaw or None
        Default ``inputs.gaussian(1.0)``.
    targets : TargetLaw or None
        Default ``targets.zeros()``; must have ``moments``.
    loss : str or Loss
        ``"mse"`` only.
    forward : ForwardMoments or None
        Reuse a :func:`forward_moments` result (and its input-law rule).
    degree : int, (int, int) or None
        Nodes per dimension of the input-law rule when ``forward`` is not given; ``None``
        chooses it with error control on the pooled forward and backward moments.

    Returns
    -------
    BackwardMoments
    """
    phi, phi_out = _check_net(net)
    mu_y, s_y = _loss_and_targets(net, loss, targets)
    if forward is not None:
        return _backward_at(net, phi, phi_out, forward, mu_y, s_y)
    return _moments(net, inputs, mu_y, s_y, degree)[1]


def _moments(
    net: MLP,
    inputs: InputLaw | None,
    mu_y: float,
    s_y: float,
    degree: int | tuple[int, int] | None = None,
) -> tuple[ForwardMoments, BackwardMoments]:
    """Forward and backward moments on one input-law rule, chosen with error control on both."""
    phi, phi_out = _check_net(net)
    inputs = _gaussian_inputs(1.0) if inputs is None else inputs
    m_x, q_x = _input_moments(net, inputs)

    def evaluate(rule):
        fw = _forward_at(net, phi, rule, m_x, q_x)
        bw = _backward_at(net, phi, phi_out, fw, mu_y, s_y)
        return (fw, bw), _key(fw, bw)

    return adaptive(evaluate, net, inputs, degree)


def _key(fw: ForwardMoments, bw: BackwardMoments) -> np.ndarray:
    """Pooled quantities of order one that the input-law error control watches."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = bw.delta_mean * np.exp(-0.5 * bw.log_delta_sq)
    return np.concatenate([fw.a, fw.log_var, bw.log_delta_sq, d])


def _backward_at(net, phi, phi_out, fw: ForwardMoments, mu_y: float, s_y: float):
    """(B0)–(B4) at every node of the input-law rule of ``fw``, then pooled by (I2)."""
    na, nlv, w, _ = fw.nodes()
    D, log1, S, log2, C, Ht = _backward_nodes(net, phi, phi_out, na, nlv, mu_y, s_y)
    with np.errstate(over="ignore", invalid="ignore"):
        H = Ht * np.exp(log1 - 0.5 * nlv)
    H = np.where(Ht == 0, 0.0, H)
    with np.errstate(divide="ignore"):
        node_logS = np.log(S) + log2
    return BackwardMoments(
        delta_mean=scaled_mean(D, log1, w),
        log_delta_sq=log_mean(node_logS, w),
        delta_cross=scaled_mean(C, log2, w),
        hessian=w @ np.where(np.isfinite(H), H, 0.0),
        node_log_delta_sq=node_logS,
    )


#: The moments of φ that one layer of (B1)–(B4) needs.
_BACKWARD_KINDS = ("dphi", "dphi2", "phi_dphi", "ddphi", "phi_ddphi", "phi_dphi2", "phi2_dphi2")


def _backward_nodes(net, phi, phi_out, na, nlv, mu_y, s_y):
    """The per-input recursions (B0)–(B4) for K input nodes at once.

    Returns (D, log1, S, log2, C, H̃), each of shape (K, L): E δ = D·e^{log1},
    E δ² = S·e^{log2}, E δ_jδ_k = C·e^{log2} and E ∂δ/∂z = H̃·e^{log1}/s_l.
    """
    L, n = net.depth, net.widths
    K = na.shape[0]
    sw2 = np.array(net.layer_sigma_w) ** 2
    mw = np.array(net.layer_mu_w)

    def E(act, kind, l):  # standardised moment at layer l (1-based): E[g]/s_l^deg, (K,)
        return np.asarray(_std_moment(act, kind, na[:, l - 1], nlv[:, l - 1]), dtype=np.float64)

    # Output layer (B0), δ measured in units of λ = max(s_L, 1); H̃ = s·H.
    lam_log = np.maximum(0.5 * nlv[:, L - 1], 0.0)
    rs = np.exp(0.5 * nlv[:, L - 1] - lam_log)  # s_L/λ
    iy = np.exp(-lam_log)  # 1/λ
    D = rs * E(phi_out, "phi_dphi", L) - mu_y * iy * E(phi_out, "dphi", L)
    Ht = rs * (E(phi_out, "dphi2", L) + E(phi_out, "phi_ddphi", L)) - mu_y * iy * E(
        phi_out, "ddphi", L
    )
    S = (
        rs**2 * E(phi_out, "phi2_dphi2", L)
        - 2 * mu_y * iy * rs * E(phi_out, "phi_dphi2", L)
        + s_y * iy**2 * E(phi_out, "dphi2", L)
    )
    C = D * D
    log1, log2 = lam_log.copy(), 2 * lam_log  # δ-scale of (D, H̃) and of (S, C)
    out = [np.empty((K, L)) for _ in range(6)]

    def store(l, *vals):
        for arr, v in zip(out, vals, strict=True):
            arr[:, l - 1] = v

    store(L, D, log1, S, log2, C, Ht)
    for l in range(L - 1, 0, -1):
        r = n[l + 1] / n[l]
        s2, mu = sw2[l], mw[l]  # weights of layer l+1
        rho = np.exp(0.5 * (nlv[:, l - 1] - nlv[:, l]))  # s_l/s_{l+1}
        Hc = Ht * rho  # s_l · H_{l+1}, in δ-units of (D, H̃)
        mo = _std_moments(phi, _BACKWARD_KINDS, na[:, l - 1], nlv[:, l - 1])
        d1, d2, pd1 = mo["dphi"], mo["dphi2"], mo["phi_dphi"]
        dd, pdd = mo["ddphi"], mo["phi_ddphi"]
        pd2, p2d2 = mo["phi_dphi2"], mo["phi2_dphi2"]
        T = C + (S - C) / n[l + 1]
        mix = np.exp(2 * log1 - log2)  # (D, H̃)-scale² relative to (S, C)-scale
        D_new = r * (mu * d1 * D + s2 * pd1 * Hc)  # (B1)
        H_new = r * (mu * dd * D + s2 * (pdd + d2) * Hc)  # (B2), times s_l
        S_new = d2 * (r * s2 * S + mu**2 * r**2 * T) + mix * (
            2 * r**2 * mu * s2 * D * Hc * pd2 + r**2 * s2**2 * Hc**2 * p2d2
        )  # (B3)
        C_new = d1**2 * mu**2 * r**2 * T + mix * (
            2 * r**2 * mu * s2 * D * Hc * d1 * pd1 + r**2 * s2**2 * Hc**2 * pd1**2
        )  # (B4)
        # Renormalise: the recursions are linear in the δ-scale, so factor it out.
        k1 = np.maximum(np.abs(D_new), np.abs(H_new))
        k2 = np.maximum(np.abs(S_new), np.abs(C_new))
        k1 = np.where(k1 > 0, k1, 1.0)
        k2 = np.where(k2 > 0, k2, 1.0)
        D, Ht, log1 = D_new / k1, H_new / k1, log1 + np.log(k1)
        S, C, log2 = S_new / k2, C_new / k2, log2 + np.log(k2)
        store(l, D, log1, S, log2, C, Ht)
    return tuple(out)


def _pair_expect(act: Activation, fn, a: float, logv: float, c: float) -> float:
    """E[fn(u, w, s)], (u, w) ~ N((m, m), v[[1, c], [c, 1]]), scaled as in :func:`_std_moment`.

    ``fn`` receives the pre-activations and the scale s by which it must divide each φ to be
    standardised; for positively homogeneous φ the pair is drawn standardised and s = 1.
    """
    c = float(np.clip(c, -1.0, 1.0))
    # Cross-sample moments only enter grad_w_sq with weight (B−1)/B: 1e−6 is ample and keeps
    # the 2-D rule (≤ 128 nodes per dimension and piece) cheap at depth 200.
    kw = {"kinks1": act.kinks, "kinks2": act.kinks, "rtol": 1e-6, "atol": 1e-9}
    kw["max_degree"] = 128
    if act.positively_homogeneous:
        return float(expect2(lambda u, w: fn(u, w, 1.0), a, a, 1.0, 1.0, c, **kw))
    s = float(np.exp(0.5 * logv))
    return float(expect2(lambda u, w: fn(u, w, s), a * s, a * s, s * s, s * s, c, **kw))


@dataclass(frozen=True)
class PairMoments:
    """Moments across two independent inputs a ≠ b of the same network, l = 1 … L.

    Attributes
    ----------
    z_corr : ndarray, shape (L,)
        corr(z⁽ˡ⁾_{a,j}, z⁽ˡ⁾_{b,j}) = κ_l/v_l.
    h_cross : ndarray, shape (L,)
        E[h⁽ˡ⁻¹⁾_{a,i} h⁽ˡ⁻¹⁾_{b,i}] (the input of layer l; m_x² for l = 1).
    delta_cross_sample : ndarray, shape (L,)
        S^{ab}_l = E[δ⁽ˡ⁾_{a,j} δ⁽ˡ⁾_{b,j}] (may be ±inf only on overflow).
    """

    z_corr: np.ndarray
    h_cross: np.ndarray
    delta_cross_sample: np.ndarray


def pair_moments(
    net: MLP,
    inputs: InputLaw | None = None,
    targets: TargetLaw | None = None,
    loss: str | Loss = "mse",
    *,
    forward: ForwardMoments | None = None,
    backward: BackwardMoments | None = None,
) -> PairMoments:
    """Cross-sample recursions for two independent inputs (the c-map of an MLP spec).

    Forward, κ_l = Cov(z_{a,j}, z_{b,j}) with (u_a, u_b) ~ N((m, m), [[v, κ], [κ, v]]) at
    layer l−1 (Poole et al.'s c-map with means):

        κ_1 = σ_w² m_x² + σ_b²,   κ_l = σ_w² E[φ(u_a)φ(u_b)] + σ_b²                        (P1)

    Backward, under the assumptions of :func:`backward_moments`, with
    T^{ab} = C^{ab} + (S^{ab} − C^{ab})/n_{l+1} and the Stein terms of (B3):

        S^{ab}_l = E[φ'_aφ'_b](rσ² S^{ab} + μ²r² T^{ab})
                   + 2r²μσ² D H E[φ'_aφ'_bφ_b] + r²σ⁴ H² E[φ'_aφ_aφ'_bφ_b]                 (P2)
        C^{ab}_l = E[φ']² μ²r² T^{ab} + 2r²μσ² D H E[φ'] E[φφ'] + r²σ⁴ H² E[φφ']²          (P3)
        S^{ab}_L = E[g(u_a)g(u_b)], g = (φ_out − μ_y)φ_out',   C^{ab}_L = D_L²            (P0)

    The recursion runs on the pooled law of z (:func:`forward_moments`), not per input: the
    cross-sample terms enter only ``grad_w_sq`` with B > 1, which :func:`~deltastats.theory.
    predict.not_covered` lists as not derived at finite width.

    (P0) uses E[y_a y_b] = μ_y² (targets independent across samples, or constant). The 2-D
    quadrature here runs at rtol 1e−6 (it only enters grad_w_sq, with weight (B−1)/B); deep
    (≈ 200-layer) chaotic networks with kinked or non-saturating φ may still warn at that level.

    Returns
    -------
    PairMoments
    """
    phi, phi_out = _check_net(net)
    mu_y, s_y = _loss_and_targets(net, loss, targets)
    fw = forward_moments(net, inputs) if forward is None else forward
    bw = backward_moments(net, inputs, targets, loss, forward=fw) if backward is None else backward
    L, n = net.depth, net.widths
    sw2, sb2 = np.array(net.layer_sigma_w) ** 2, np.array(net.layer_sigma_b) ** 2
    mw = np.array(net.layer_mu_w)
    p, dp = phi.phi, phi.dphi

    # Forward (P1).
    corr = np.empty(L)
    hab = np.empty(L)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        hab[0] = fw.input_mean**2
        corr[0] = (sw2[0] * fw.input_mean**2 + sb2[0]) * np.exp(-fw.log_var[0])
        for l in range(1, L):
            pab = _pair_expect(
                phi,
                lambda u, w, sc: p(u) * p(w) / sc**2,
                fw.a[l - 1],
                fw.log_var[l - 1],
                corr[l - 1],
            )
            hab[l] = pab * np.exp(fw.log_var[l - 1]) if pab != 0 else 0.0
            corr[l] = sw2[l] * pab * np.exp(fw.log_var[l - 1] - fw.log_var[l]) + sb2[l] * np.exp(
                -fw.log_var[l]
            )
    corr = np.clip(corr, -1.0, 1.0)

    # Backward (P0)–(P3), in the units of backward_moments: λ = max(s_L, 1).
    lam_log = max(0.5 * fw.log_var[L - 1], 0.0)
    rs = np.exp(0.5 * fw.log_var[L - 1] - lam_log)
    iy = np.exp(-lam_log)
    po, dpo = phi_out.phi, phi_out.dphi

    def g_out(u, w, sc):
        return (rs * po(u) / sc - mu_y * iy) * dpo(u) * (rs * po(w) / sc - mu_y * iy) * dpo(w)

    Sab = _pair_expect(phi_out, g_out, fw.a[L - 1], fw.log_var[L - 1], corr[L - 1])
    log2 = 2 * lam_log
    D_L = bw.delta_mean[L - 1]
    Cab = (D_L * np.exp(-lam_log)) ** 2
    out = np.empty(L)
    out[L - 1] = Sab * np.exp(log2)
    for l in range(L - 1, 0, -1):
        r = n[l + 1] / n[l]
        s2, mu = sw2[l], mw[l]
        a, lv, c = fw.a[l - 1], fw.log_var[l - 1], corr[l - 1]
        s_l = np.exp(0.5 * lv)
        # D and s_l·H_{l+1} of the layer above, in the (S, C) units e^{log2/2}.
        with np.errstate(over="ignore", invalid="ignore"):
            D = bw.delta_mean[l] * np.exp(-0.5 * log2)
            Hc = bw.hessian[l] * s_l * np.exp(-0.5 * log2)
        dd = _pair_expect(phi, lambda u, w, sc: dp(u) * dp(w), a, lv, c)
        ddp = _pair_expect(phi, lambda u, w, sc: dp(u) * dp(w) * p(w) / sc, a, lv, c)
        pdpd = _pair_expect(phi, lambda u, w, sc: dp(u) * p(u) * dp(w) * p(w) / sc**2, a, lv, c)
        d1 = float(_std_moment(phi, "dphi", a, lv))
        pd1 = float(_std_moment(phi, "phi_dphi", a, lv))
        T_ = Cab + (Sab - Cab) / n[l + 1]
        S_new = dd * (r * s2 * Sab + mu**2 * r**2 * T_) + (
            2 * r**2 * mu * s2 * D * Hc * ddp + r**2 * s2**2 * Hc**2 * pdpd
        )  # (P2)
        C_new = d1**2 * mu**2 * r**2 * T_ + (
            2 * r**2 * mu * s2 * D * Hc * d1 * pd1 + r**2 * s2**2 * Hc**2 * pd1**2
        )  # (P3)
        k = max(abs(S_new), abs(C_new))
        k = k if (k > 0 and np.isfinite(k)) else 1.0
        Sab, Cab, log2 = S_new / k, C_new / k, log2 + np.log(k)
        with np.errstate(over="ignore"):
            out[l - 1] = Sab * np.exp(log2) if Sab != 0 else 0.0
    return PairMoments(z_corr=corr, h_cross=hab, delta_cross_sample=out)
