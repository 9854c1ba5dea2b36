"""Former import path of :mod:`deltastats.model.inputs`, kept so existing imports work.

``import deltastats.inputs`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .model import inputs as _module

sys.modules[__name__] = _module
