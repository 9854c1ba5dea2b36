"""Former import path of :mod:`deltastats.workflow.sweeps`, kept so existing imports work.

``import deltastats.sweeps`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .workflow import sweeps as _module

sys.modules[__name__] = _module
