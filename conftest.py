"""Doctest collection: the former import paths of the package are aliases of the new modules
(they replace themselves in ``sys.modules``), so their docstrings are collected once, at the
new path. The PyTorch adapter is collected only where torch is installed."""

import importlib.util
from pathlib import Path

_PKG = Path(__file__).parent / "deltastats"
collect_ignore = [str(p) for p in _PKG.glob("*.py") if "sys.modules[__name__]" in p.read_text()]
collect_ignore.append(str(_PKG / "estimators.py"))
if importlib.util.find_spec("torch") is None:  # the optional extra is not installed
    collect_ignore.append(str(_PKG / "torch.py"))
