"""Former import path of :mod:`deltastats.workflow.runner`, kept so existing imports work.

``import deltastats.runner`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .workflow import runner as _module

sys.modules[__name__] = _module
