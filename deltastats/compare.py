"""Former import path of :mod:`deltastats.workflow.compare`, kept so existing imports work.

``import deltastats.compare`` gives that very module (one object: setting an attribute on
either sets it on both). Python then also binds the package attribute ``deltastats.compare``
to this module, where it is the function :func:`deltastats.compare` otherwise; so that
``ds.compare(estimates, predictions)`` works whatever was imported first, the module is
callable and calls its :func:`~deltastats.workflow.compare.compare`.
"""

import sys
import types

from .workflow import compare as _module


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return self.compare(*args, **kwargs)

    def __reduce__(self):  # pickled (e.g. for joblib workers) as the function it stands for
        return (self._unpickle_compare, ())


_module.__class__ = _CallableModule
sys.modules[__name__] = _module
