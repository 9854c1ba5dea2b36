"""Theory for the statistics of δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾: mean field, the Gaussian backward map, exact
results for deep linear networks and finite-width fluctuations.

Notation: layers l = 1 … L, widths (n_0, …, n_L), W⁽ˡ⁾_ij ~ N(μ_w/n_{l−1}, σ_w²/n_{l−1}),
b⁽ˡ⁾_i ~ N(μ_b, σ_b²), loss L = ½‖g − y‖².

- :mod:`~deltastats.theory.quadrature` — one Gaussian-expectation primitive with error control;
- :mod:`~deltastats.theory.input_law` — every prediction averaged over the exact input law
  (the per-input recursions on the input law's (x̄, ρ) quadrature rule, pooled by the law of
  total variance);
- :mod:`~deltastats.theory.meanfield` — q/c-maps, fixed points, χ₁, depth scales, the
  order-to-chaos line (Poole et al. 2016; Schoenholz et al. 2017), forward moments;
- :mod:`~deltastats.theory.gaussian` — the backward recursions (B0)–(B4) under the Gaussian
  assumption and the two-input moments (P0)–(P3) of the batch-mean gradient;
- :mod:`~deltastats.theory.linear` — exact finite-width results for deep linear networks;
- :mod:`~deltastats.theory.finite_width` — the forward 1/n corrections (kernel fluctuation
  and shift), the exact finite-width E[δ²] of bias-free ReLU networks and the ReLU
  log-normal law of ‖δ⁽ˡ⁾‖²;
- :mod:`~deltastats.theory.predict` — :func:`predict` (tidy rows ``layer, statistic,
  prediction, assumption``) and :func:`not_covered`.

Everything that grows geometrically with depth (q⁽ˡ⁾ for unbounded φ, E[δ²]) is carried as a
logarithm, so a depth-200 chaotic network gives finite ``log_*`` predictions; the plain values
are exp of those and may be ``inf``, never NaN. Theory never imports the engine.
"""

from __future__ import annotations

from . import input_law, quadrature
from ._common import TheoryNotCovered
from .backward_width import BackwardCorrections, backward_corrections, backward_covered
from .finite_width import (
    ForwardCorrections,
    LogNormalFluctuation,
    forward_corrections,
    hanin_rho,
    relu_delta_sq,
    relu_grad_w_sq,
    relu_log_norm_var,
)
from .gaussian import BackwardMoments, PairMoments, backward_moments, pair_moments
from .linear import LinearExact, linear_exact, tied_linear_deltas
from .meanfield import (
    DepthScales,
    FixedPoint,
    ForwardMoments,
    c_map,
    chi1,
    critical_sigma_w,
    depth_scales,
    fixed_point,
    forward_moments,
    phase_diagram,
    q_map,
)
from .predict import STATISTICS, for_verdicts, not_covered, predict

__all__ = [
    "STATISTICS",
    "BackwardCorrections",
    "BackwardMoments",
    "DepthScales",
    "FixedPoint",
    "ForwardCorrections",
    "ForwardMoments",
    "LinearExact",
    "LogNormalFluctuation",
    "PairMoments",
    "TheoryNotCovered",
    "backward_corrections",
    "backward_covered",
    "backward_moments",
    "c_map",
    "chi1",
    "critical_sigma_w",
    "depth_scales",
    "fixed_point",
    "forward_corrections",
    "for_verdicts",
    "forward_moments",
    "hanin_rho",
    "input_law",
    "linear_exact",
    "not_covered",
    "pair_moments",
    "phase_diagram",
    "predict",
    "q_map",
    "quadrature",
    "relu_delta_sq",
    "relu_grad_w_sq",
    "relu_log_norm_var",
    "tied_linear_deltas",
]
