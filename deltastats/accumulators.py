"""Former import path of :mod:`deltastats.stats.accumulators`, kept so existing imports work.

``import deltastats.accumulators`` gives that very module (one object: setting an attribute on
either sets it on both).
"""

import sys

from .stats import accumulators as _module

sys.modules[__name__] = _module
