"""Former import path of :mod:`deltastats.model.targets`, kept so existing imports work.

``import deltastats.targets`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .model import targets as _module

sys.modules[__name__] = _module
