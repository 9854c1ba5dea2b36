"""Former import path of :mod:`deltastats.model.networks`, kept so existing imports work.

``import deltastats.networks`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .model import networks as _module

sys.modules[__name__] = _module
