"""Former import path of :mod:`deltastats.workflow.report`, kept so existing imports work.

``import deltastats.report`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .workflow import report as _module

sys.modules[__name__] = _module
