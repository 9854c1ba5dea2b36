"""Former import path of :mod:`deltastats.workflow.plots`, kept so existing imports work.

``import deltastats.plots`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .workflow import plots as _module

sys.modules[__name__] = _module
