"""Griffe extension for the API reference: the package's docstrings use a few reST idioms
(they read well in ``help()``); this turns them into Markdown before mkdocstrings renders them.

- Sphinx roles ``:func:`~deltastats.theory.predict``` become inline code: `predict`
  (``~`` keeps the last component, as in Sphinx);
- reST simple tables (columns framed by ``==== ====`` rules) become preformatted blocks;
- a paragraph ending in ``::`` (a reST literal block follows) ends in ``:``; the indented
  block after it is a code block in Markdown too;
- in prose (not in code blocks or inline code) an underscore that could open or close
  Markdown emphasis is escaped, so that subscripts such as ``W⁽ˡ⁾_ij ~ N(μ_w/n_{l−1}, …)``
  stay as written.

The source files are not changed. mkdocs.yml loads this file by path.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")
_RULE = re.compile(r"^\s*=+(?: +=+)+\s*$")
_LITERAL = re.compile(r"(\S)::$", re.M)


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


_DELIMITER = re.compile(r"(?<!\w)_|_(?!\w)")
_CODE_SPAN = re.compile(r"((`+).+?\2)")


def _escape_prose(line: str) -> str:
    """Escape emphasis-capable underscores outside inline code spans."""
    out, pos = [], 0
    for span in _CODE_SPAN.finditer(line):  # spans of ` or ``: kept as they are
        out += [_DELIMITER.sub(r"\\_", line[pos : span.start()]), span.group(0)]
        pos = span.end()
    return "".join([*out, _DELIMITER.sub(r"\\_", line[pos:])])


def _underscores(text: str) -> str:
    """Escape underscores in prose lines only; code (fenced, or indented by 4 more than the
    prose before it after a blank line) is left alone. Unsure lines are left alone too."""
    out: list[str] = []
    fenced = False
    prose_indent = 0
    code_indent: int | None = None
    blank_before = True
    for line in text.split("\n"):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith(">>>"):  # a doctest: code until the next blank line
            code_indent = indent
            out.append(line)
        elif stripped.startswith("```"):
            fenced = not fenced
            out.append(line)
        elif fenced or not stripped:
            out.append(line)
        elif code_indent is not None and indent >= code_indent:
            out.append(line)
        elif blank_before and indent >= prose_indent + 4:
            code_indent = indent
            out.append(line)
        else:
            code_indent = None
            prose_indent = indent
            out.append(_escape_prose(line))
        blank_before = not stripped
    return "\n".join(out)


def markdown(text: str) -> str:
    """A docstring's text with the reST idioms above turned into Markdown."""
    text = _LITERAL.sub(r"\1:", _ROLE.sub(_role, text))
    return _underscores(_tables(text))


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
