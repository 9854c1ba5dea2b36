"""Former import path of :mod:`deltastats.workflow.config`, kept so existing imports work.

``import deltastats.config`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .workflow import config as _module

sys.modules[__name__] = _module
