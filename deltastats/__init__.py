"""deltastats: Monte Carlo statistics of the backpropagated error signal δ⁽ˡ⁾ = ∂L/∂z⁽ˡ⁾."""

from . import activations, inputs, losses, targets
from .activations import Activation, get_activation
from .engine import NumericalOverflowWarning, Trace, backprop, forward
from .losses import Loss, get_loss
from .networks import INITS, MLP, Params

__version__ = "0.1.0"

__all__ = [
    "INITS",
    "MLP",
    "Activation",
    "Loss",
    "NumericalOverflowWarning",
    "Params",
    "Trace",
    "activations",
    "backprop",
    "forward",
    "get_activation",
    "get_loss",
    "inputs",
    "losses",
    "targets",
]
