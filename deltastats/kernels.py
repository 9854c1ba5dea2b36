"""Former import path of :mod:`deltastats.engine.kernels`, kept so existing imports work.

``import deltastats.kernels`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .engine import kernels as _module

sys.modules[__name__] = _module
