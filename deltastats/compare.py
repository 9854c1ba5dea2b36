"""Former import path of :mod:`deltastats.workflow.compare`, kept so existing imports work.

``import deltastats.compare`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .workflow import compare as _module

sys.modules[__name__] = _module
