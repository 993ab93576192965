"""Numbers and text as the report shows them.

Numbers: fixed decimals, p-values with a floor, percentages. Text that comes from the config or
the data (study title, arm labels, claim statements, covariate levels) is untrusted: it is
HTML-escaped before it reaches a page (:func:`html_text`), and in Markdown also stripped of the
link and image syntax (:func:`md_text`), so that a label such as ``![x](data/participants.csv)``
or ``<script>`` shows as the characters it is made of and loads nothing.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

# Characters with a meaning in (CommonMark) inline Markdown, and ":" (bare URLs become links);
# each is shown literally when preceded by a backslash. Text is put on one line first, so the
# block markers (-, +, 1.) never start a line. HTML escaping runs after, so that a backslash
# never splits an entity.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|~$:])")


def html_text(text: Any) -> str:
    """`text` as HTML character data (``<``, ``>``, ``&`` and quotes escaped)."""
    return html.escape(str(text), quote=True)


def md_text(text: Any) -> str:
    """`text` for a Markdown cell or Markdown output: on one line, HTML-escaped, and every
    Markdown punctuation character backslash-escaped, so that no link, image, emphasis or raw
    HTML can come out of it."""
    flat = " ".join(str(text).split())
    return html.escape(_MD_SPECIAL.sub(r"\\\1", flat), quote=True)


def mpl_text(text: Any) -> str:
    """`text` for a matplotlib label: ``$`` escaped, so that it is not read as mathtext."""
    return str(text).replace("$", r"\$")


def finite(x: Any) -> bool:
    """Whether `x` is a finite number."""
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x: Any, digits: int = 2) -> str:
    """A number with `digits` decimals; blank for missing, ``inf``/``-inf`` for infinities."""
    if _missing(x):
        return ""
    x = float(x)
    if not math.isfinite(x):
        return "" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return f"{x:.{digits}f}"


def fmt_p(p: Any) -> str:
    """A p-value: three decimals, ``<0.001`` below that; blank for missing."""
    if _missing(p):
        return ""
    p = float(p)
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_ci(low: Any, high: Any, digits: int = 2) -> str:
    """``low–high`` with `digits` decimals; blank if either bound is missing."""
    if _missing(low) or _missing(high):
        return ""
    return f"{fmt_num(low, digits)}–{fmt_num(high, digits)}"


def fmt_pct(x: Any, digits: int = 0) -> str:
    """A fraction as a percentage (0.68 -> ``68%``); blank for missing."""
    if _missing(x):
        return ""
    return f"{100 * float(x):.{digits}f}%"
