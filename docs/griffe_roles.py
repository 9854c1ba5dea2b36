"""Griffe extension for the API reference: the package's docstrings use a few reST idioms
(they read well in ``help()``); this turns them into Markdown before mkdocstrings renders them.

- Sphinx roles ``:func:`~deltastats.theory.predict``` become inline code: `predict`
  (``~`` keeps the last component, as in Sphinx);
- reST simple tables (columns framed by ``==== ====`` rules) become preformatted blocks.

The source files are not changed. mkdocs.yml loads this file by path.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")
_RULE = re.compile(r"^\s*=+(?: +=+)+\s*$")


def _role(m: re.Match) -> str:
    tilde, target = m.groups()
    if "<" in target and target.endswith(">"):  # :func:`text <target>`
        target = target[: target.index("<")].strip()
    elif tilde:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _tables(text: str) -> str:
    """Wrap each reST simple table in a fenced ``text`` block (same indentation)."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not _RULE.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        j = i + 1  # the table ends at a rule followed by a blank line or the end
        while j < len(lines) and not (
            _RULE.match(lines[j]) and (j + 1 == len(lines) or not lines[j + 1].strip())
        ):
            j += 1
        out += [f"{indent}```text", *lines[i : j + 1], f"{indent}```"]
        i = j + 1
    return "\n".join(out)


def markdown(text: str) -> str:
    """A docstring's text with the reST idioms above turned into Markdown."""
    return _tables(_ROLE.sub(_role, text))


class ReSTIdioms(griffe.Extension):
    """Rewrite every docstring of the loaded package once it is fully loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def visit(obj) -> None:
            if id(obj) in seen or obj.is_alias:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = markdown(obj.docstring.value)
            for member in obj.members.values():
                visit(member)

        visit(pkg)
