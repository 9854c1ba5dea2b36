"""Former import path of :mod:`deltastats.stats.features`, kept so existing imports work.

``import deltastats.feature_kernels`` gives that very module (one object: setting an attribute
on either sets it on both).
"""

import sys

from .stats import features as _module

sys.modules[__name__] = _module
