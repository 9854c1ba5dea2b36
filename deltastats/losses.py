"""Former import path of :mod:`deltastats.model.losses`, kept so existing imports work.

``import deltastats.losses`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .model import losses as _module

sys.modules[__name__] = _module
