"""The experiment configs shipped with deltastats (sweep TOMLs reproducing classic results).

``deltastats sweep order_chaos`` runs ``order_chaos.toml`` from here, wherever deltastats is
installed; :func:`path` and :func:`names` find them from Python.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent


def names() -> list[str]:
    """Names of the shipped configs (file stems), sorted."""
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def path(name: str) -> Path:
    """The file of the shipped config ``name`` (``"order_chaos"`` or ``"order_chaos.toml"``).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the shipped ones.
    """
    stem = name[:-5] if name.endswith(".toml") else name
    p = _HERE / f"{stem}.toml"
    if not p.is_file():
        raise ValueError(
            f"no config file {name!r} and no shipped experiment of that name; shipped: "
            f"{', '.join(names())}"
        )
    return p
