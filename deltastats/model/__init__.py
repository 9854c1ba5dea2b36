"""What is sampled: activations, losses, the MLP spec and its parameters, input and target laws,
and the random streams every draw comes from.

- :mod:`~deltastats.model.activations` — φ, φ' and their properties;
- :mod:`~deltastats.model.losses` — per-sample losses and ∂L/∂g;
- :mod:`~deltastats.model.networks` — :class:`MLP`, :class:`Params`, :func:`forward`;
- :mod:`~deltastats.model.inputs`, :mod:`~deltastats.model.targets` — laws of x and y;
- :mod:`~deltastats.model.seeding` — one random stream per (seed, stream, network);
- :mod:`~deltastats.model.philox` — the counter-based Gaussian numbers of those streams.
"""

from __future__ import annotations

from . import activations, inputs, losses, networks, philox, seeding, targets
from .activations import Activation, get_activation
from .losses import Loss, get_loss
from .networks import INITS, MLP, Params, forward

__all__ = [
    "INITS",
    "MLP",
    "Activation",
    "Loss",
    "Params",
    "activations",
    "forward",
    "get_activation",
    "get_loss",
    "inputs",
    "losses",
    "networks",
    "philox",
    "seeding",
    "targets",
]
