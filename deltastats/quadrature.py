"""Former import path of :mod:`deltastats.theory.quadrature`, kept so existing imports work.

``import deltastats.quadrature`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .theory import quadrature as _module

sys.modules[__name__] = _module
