"""Disclosure control: no cell of the report lets a reader learn about fewer than ``min_cell``
participants.

- :func:`fmt_count`: a count below ``min_cell`` shows ``<5`` (for ``min_cell: 5``); zero too,
  unless it is structural (nobody excluded, nobody left at risk).
- :func:`suppress`: primary and *secondary* suppression over additive groups (a row with its
  total, a column adding up to the N in the header): while a group has exactly one hidden cell,
  which subtraction would give back, its smallest other cell is hidden too (shown ``[s]``).
- :func:`suppress_counts`: primary suppression of the count columns of a model's extra table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

SUPPRESSED = "[s]"  # a secondary-suppressed cell (its value is >= min_cell but would reveal one)

# Column names of a model's extra table that count participants or events (n, n_risk,
# n_events, events, participants, dropped, ...): shown with fmt_count. Matched on the whole
# name, underscores as word breaks.
COUNT_COLUMN = re.compile(
    r"^(n|count|counts|events?|participants|analysed|analyzed|dropped|excluded|received|"
    r"at_risk|subjects)$|^n_|_n$|_(count|events?|participants)$"
)
# Count columns where a zero is structural (nobody dropped), as in the flow table.
STRUCTURAL_ZERO = re.compile(r"dropped|excluded|censor")


def fmt_count(n: Any, min_cell: int, *, suppress_zero: bool = True) -> str:
    """A participant count as shown in a report: ``<5`` when it counts fewer than `min_cell`.

    Zero is suppressed too unless `suppress_zero` is False (used where a zero is structural, such
    as nobody excluded, or nobody left at risk after the end of follow-up).
    """
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return ""
    n = int(n)
    if n < min_cell and (n > 0 or suppress_zero):
        return f"<{min_cell}"
    return str(n)


def suppress(
    values: Mapping[Hashable, float],
    groups: Iterable[Sequence[Hashable]],
    min_cell: int,
    *,
    suppress_zero: bool = True,
    priority: Mapping[Hashable, int] | None = None,
    exempt: Iterable[Hashable] = (),
) -> tuple[set, set]:
    """Primary and secondary suppression of a table of counts.

    `values` maps each cell (any hashable key) to its count. Each group lists cells tied by one
    additive relation (a row with its total, the categories of a column with the column total):
    a group with exactly one suppressed cell would let a reader recover it by subtraction, so
    the smallest other cell of the group (lowest `priority` first, default 0) is suppressed too,
    until no group has exactly one. Cells in `exempt` are never suppressed as primary cells
    (e.g. totals shown elsewhere). Returns ``(primary, secondary)`` sets of cell keys.
    """
    exempt = set(exempt)
    priority = dict(priority or {})
    primary = {
        c
        for c, v in values.items()
        if c not in exempt and v < min_cell and (v > 0 or suppress_zero)
    }
    secondary: set = set()
    groups = [list(g) for g in groups]
    changed = True
    while changed:
        changed = False
        for group in groups:
            hidden = [c for c in group if c in primary or c in secondary]
            if len(hidden) != 1:
                continue
            candidates = [c for c in group if c not in hidden]
            if not candidates:
                continue
            order = sorted(
                range(len(candidates)),
                key=lambda i: (priority.get(candidates[i], 0), values[candidates[i]], i),
            )
            secondary.add(candidates[order[0]])
            changed = True
    return primary, secondary


def cell_text(key: Hashable, text: str, primary: set, secondary: set, min_cell: int) -> str:
    """What a table shows for cell `key`: ``<5`` if primary-suppressed, ``[s]`` if secondary,
    else `text`."""
    if key in primary:
        return f"<{min_cell}"
    if key in secondary:
        return SUPPRESSED
    return text


def is_count_column(name: str) -> bool:
    """Whether a column of a model's extra table counts participants or events."""
    return bool(COUNT_COLUMN.search(str(name)))


def suppress_counts(df: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    """`df` with every count column (:func:`is_count_column`) shown through :func:`fmt_count`
    (a zero is suppressed too, except in columns of dropped, excluded or censored counts); a
    model's extra tables (medians with n and events, participants analysed and dropped) reach the
    report only this way."""
    out = df.copy()
    for col in out.columns:
        if is_count_column(col) and pd.api.types.is_numeric_dtype(out[col]):
            zero = not STRUCTURAL_ZERO.search(str(col))
            out[col] = out[col].map(lambda v, z=zero: fmt_count(v, min_cell, suppress_zero=z))
    return out


def suppression_note(min_cell: int) -> str:
    """The footnote of a table with suppressed cells."""
    return (
        f"<{min_cell}: fewer than {min_cell} participants; {SUPPRESSED}: hidden so that a "
        f"suppressed cell cannot be recovered from the totals."
    )
