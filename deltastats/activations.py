"""Former import path of :mod:`deltastats.model.activations`, kept so existing imports work.

``import deltastats.activations`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .model import activations as _module

sys.modules[__name__] = _module
