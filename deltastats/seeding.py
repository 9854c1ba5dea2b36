"""Former import path of :mod:`deltastats.model.seeding`, kept so existing imports work.

``import deltastats.seeding`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .model import seeding as _module

sys.modules[__name__] = _module
