"""Former import path of :mod:`deltastats.workflow.metadata`, kept so existing imports work.

``import deltastats.metadata`` gives that very module (one object: setting an attribute on either
sets it on both).
"""

import sys

from .workflow import metadata as _module

sys.modules[__name__] = _module
