"""The small formula grammar a config may use: terms, interactions and a few transforms.

A formula from the config is untrusted text, and formulaic evaluates Python inside ``{...}`` and
in calls it does not know, and a backtick-quoted name can be closed by a backtick inside it. So a
formula is accepted only when it parses in this grammar, and only then handed to formulaic::

    rhs     := term ("+" term)*
    term    := factor ((":" | "*") factor)*
    factor  := NAME | TRANSFORM "(" NAME ")" | "1" | "0"
    NAME    := a letter, then letters, digits or "_"   (arm, or a declared covariate)
    TRANSFORM := log | scale | center | C

An optional leading ``~`` is allowed (``~ arm + age``). ``a*b`` means ``a + b + a:b``; ``C(x)``
treats ``x`` as categorical; ``log``, ``scale`` and ``center`` are formulaic's transforms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NAME_PATTERN = r"[A-Za-z][A-Za-z0-9_]*"
TRANSFORMS = ("log", "scale", "center", "C")
_TOKEN = re.compile(rf"\s*(?:(?P<name>{NAME_PATTERN})|(?P<num>[01])|(?P<op>[+:*()~]))")


class FormulaError(ValueError):
    """A formula outside the grammar, or naming a column that is not allowed."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            bad = text[pos:].lstrip()[:1]
            raise FormulaError(
                f"'{text}': '{bad}' is not allowed (column names, +, :, *, "
                f"{', '.join(t + '(name)' for t in TRANSFORMS)}, 1, 0)"
            )
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def check_formula(text: str, names: Iterable[str] | None = None) -> list[str]:
    """Parse `text` in the grammar; return the column names it uses. With `names`, every name
    must be one of them. Raises :class:`FormulaError` naming what is wrong."""
    tokens = _tokens(str(text))
    if tokens and tokens[0] == ("op", "~"):
        tokens = tokens[1:]
    if not tokens:
        raise FormulaError(f"'{text}': empty formula")
    used: list[str] = []
    i = 0

    def factor() -> None:
        nonlocal i
        if i >= len(tokens):
            raise FormulaError(f"'{text}': ends where a term is expected")
        kind, value = tokens[i]
        if kind == "num":
            i += 1
            return
        if kind != "name":
            raise FormulaError(f"'{text}': '{value}' where a term is expected")
        if i + 1 < len(tokens) and tokens[i + 1] == ("op", "("):
            if value not in TRANSFORMS:
                raise FormulaError(
                    f"'{text}': {value}() is not an allowed transform ({', '.join(TRANSFORMS)})"
                )
            if not (
                i + 3 < len(tokens) and tokens[i + 2][0] == "name" and tokens[i + 3] == ("op", ")")
            ):
                raise FormulaError(f"'{text}': {value}( takes one column name and a ')'")
            used.append(tokens[i + 2][1])
            i += 4
            return
        used.append(value)
        i += 1

    def term() -> None:
        nonlocal i
        factor()
        while i < len(tokens) and tokens[i] in (("op", ":"), ("op", "*")):
            i += 1
            factor()

    term()
    while i < len(tokens) and tokens[i] == ("op", "+"):
        i += 1
        term()
    if i != len(tokens):
        raise FormulaError(f"'{text}': unexpected '{tokens[i][1]}'")
    if names is not None:
        allowed = set(names)
        unknown = [n for n in used if n not in allowed]
        if unknown:
            raise FormulaError(
                f"'{text}': {', '.join(sorted(set(unknown)))} is not arm or a declared covariate"
            )
    return used
