"""Disclosure control: no cell of the report lets a reader learn about fewer than ``min_cell``
participants.

- :func:`fmt_count`: a count below ``min_cell`` shows ``<5`` (for ``min_cell: 5``); zero too,
  unless it is structural (nobody excluded, nobody left at risk).
- :func:`suppress`: primary and *secondary* suppression over additive groups (a row with its
  total, a column adding up to the N in the header): while a group has exactly one hidden cell,
  which subtraction would give back, its smallest other cell is hidden too (shown ``[s]``).
- :func:`suppress_counts`: primary suppression of the count columns of a model's extra table,
  with secondary suppression down each column (arm rows of one quantity);
- :func:`cohort_cells`: one report-wide plan for the counts several tables print (participants
  received, excluded, analysed and events, by arm and in total), so that a count hidden in one
  table is hidden in every other and no subtraction across tables gives it back;
- :func:`coarse_share`, :func:`kanon_range`: design summaries (a proportion, a range of
  follow-up) that never reveal fewer than ``min_cell`` participants.

The rule across tables (issue 12): a count is printed only where every table that prints the same
quantity prints it too; when any per-arm participant or event count is hidden (a *small* cohort),
the models' total participants and events, per-arm exposure and rates (which with the ratio give
the events back) and rate-model intercepts are hidden as well.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SUPPRESSED = "[s]"  # a secondary-suppressed cell (its value is >= min_cell but would reveal one)

# Column names of a model's extra table that count participants or events (n, n_risk,
# n_events, events, participants, dropped, ...): shown with fmt_count. Matched on the whole
# name, underscores as word breaks.
COUNT_COLUMN = re.compile(
    r"^(n|count|counts|events?|participants|analysed|analyzed|dropped|excluded|received|"
    r"at_risk|subjects)$|^n_|_n$|_(count|events?|participants)$"
)
# Time-at-risk columns: hidden with the counts in a small cohort (with the rate ratio, each
# arm's exposure and the total would give the events back).
EXPOSURE_COLUMN = re.compile(r"exposure|person_time|participant_(days|months|years)")
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
    force: Iterable[Hashable] = (),
) -> tuple[set, set]:
    """Primary and secondary suppression of a table of counts.

    `values` maps each cell (any hashable key) to its count. Each group lists cells tied by one
    additive relation (a row with its total, the categories of a column with the column total):
    a group with exactly one suppressed cell would let a reader recover it by subtraction, so
    the smallest other cell of the group (lowest `priority` first, default 0) is suppressed too,
    until no group has exactly one. Cells in `exempt` are never suppressed as primary cells
    (e.g. totals shown elsewhere); cells in `force` are hidden from the start (hidden in another
    table). Returns ``(primary, secondary)`` sets of cell keys.
    """
    exempt = set(exempt)
    priority = dict(priority or {})
    primary = {
        c
        for c, v in values.items()
        if c not in exempt and v < min_cell and (v > 0 or suppress_zero)
    }
    secondary: set = {c for c in force if c in values and c not in primary}
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


def suppress_counts(df: pd.DataFrame, min_cell: int, *, hide_all: bool = False) -> pd.DataFrame:
    """`df` with every count column (:func:`is_count_column`) shown through :func:`fmt_count`
    (a zero is suppressed too, except in columns of dropped, excluded or censored counts), with
    secondary suppression down each column (its rows are the arms, or the models, of one
    quantity whose total another table prints: one hidden cell hides the smallest other); a
    model's extra tables (medians with n and events, participants analysed and dropped) reach the
    report only this way. `hide_all` hides every count (a small cohort, see :class:`CohortCells`).
    """
    out = df.copy()
    for col in out.columns:
        if hide_all and EXPOSURE_COLUMN.search(str(col)):
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else SUPPRESSED)
            continue
        if not (is_count_column(col) and pd.api.types.is_numeric_dtype(out[col])):
            continue
        zero = not STRUCTURAL_ZERO.search(str(col))
        values = {i: float(v) for i, v in out[col].items() if not pd.isna(v)}
        if hide_all:
            out[col] = out[col].map(lambda v: "" if pd.isna(v) else SUPPRESSED)
            continue
        primary, secondary = suppress(values, [list(values)], min_cell, suppress_zero=zero)
        out[col] = [
            "" if pd.isna(v) else cell_text(i, str(int(v)), primary, secondary, min_cell)
            for i, v in out[col].items()
        ]
    return out


def any_suppressed(df: pd.DataFrame, min_cell: int) -> bool:
    """Whether :func:`suppress_counts` would hide a count of `df` (its model's totals must then
    be hidden too)."""
    shown = suppress_counts(df, min_cell)
    return bool(
        any(
            shown[c].astype(str).isin([f"<{min_cell}", SUPPRESSED]).any()
            for c in shown.columns
            if is_count_column(c)
        )
    )


@dataclass(frozen=True)
class CohortCells:
    """The report-wide disclosure plan of the cohort's counts: participants received, excluded
    and analysed and events, per arm role (``control``, ``intervention``, ``other``) and
    ``total``, keyed ``(stage, role)`` with stage one of ``received``, ``excluded``,
    ``analysed``, ``events``. Every table and sentence that prints one of them asks :meth:`text`.
    """

    min_cell: int
    values: Mapping[tuple[str, str], int]
    primary: frozenset = field(default_factory=frozenset)
    secondary: frozenset = field(default_factory=frozenset)

    def hidden(self, key: tuple[str, str]) -> bool:
        """Whether cell `key` is suppressed (primary or secondary)."""
        return key in self.primary or key in self.secondary

    def text(self, key: tuple[str, str]) -> str:
        """What any table shows for cell `key`."""
        v = self.values.get(key)
        if v is None:
            return ""
        return cell_text(key, str(int(v)), set(self.primary), set(self.secondary), self.min_cell)

    @property
    def small(self) -> bool:
        """Whether any per-arm count of analysed participants or events is hidden: then the
        models' totals, per-arm exposure and rates and rate intercepts are hidden too."""
        return any(
            self.hidden((stage, role))
            for stage in ("analysed", "events")
            for role in ("control", "intervention", "other")
        )


def cohort_cells(
    participants: Mapping[str, Any], events_by_arm: Mapping[str, int], min_cell: int
) -> CohortCells:
    """The disclosure plan of :class:`CohortCells` from the flow's ``participants`` block
    (``received_by_arm`` ...) and the events per arm role, one :func:`suppress` over all the
    additive relations at once (received = excluded + analysed per column; arms add up to the
    total per row). Zero exclusions are structural (shown); a zero event count is hidden.
    Excluded cells are hidden before received, then events, then analysed ones."""
    roles = ["control", "intervention"]
    if participants.get("received_by_arm", {}).get("other", 0):
        roles.append("other")
    values: dict[tuple[str, str], int] = {}
    for stage in ("received", "excluded", "analysed"):
        for r in roles:
            values[(stage, r)] = int(participants[f"{stage}_by_arm"].get(r, 0))
        values[(stage, "total")] = int(participants[stage])
    for r in roles:
        values[("events", r)] = int(events_by_arm.get(r, 0))
    values[("events", "total")] = int(sum(values[("events", r)] for r in roles))
    cols = [*roles, "total"]
    groups = [[(s, c) for s in ("received", "excluded", "analysed")] for c in cols]
    groups += [[(s, c) for c in cols] for s in ("received", "excluded", "analysed", "events")]
    prio = {"excluded": 0, "received": 1, "events": 2, "analysed": 3}
    primary = set()
    secondary = set()
    # zero is structural for exclusions only: run the rule per kind of zero
    p1, s1 = suppress(
        values,
        groups,
        min_cell,
        suppress_zero=False,
        priority={c: prio[c[0]] for c in values},
        force={c for c, v in values.items() if c[0] == "events" and v == 0},
    )
    primary |= p1 | {c for c, v in values.items() if c[0] == "events" and v == 0}
    secondary |= s1 - primary
    if any(("events", r) in primary | secondary for r in roles):
        # with the rate ratio and each arm's exposure, the total would give the events back
        secondary |= {("events", c) for c in cols} - primary
    return CohortCells(min_cell, values, frozenset(primary), frozenset(secondary))


def coarse_share(k: int, n: int, min_cell: int) -> str:
    """A proportion k/n that reveals no small group: ``<5 of 12`` when ``k`` (or ``n - k``)
    counts fewer than `min_cell` participants, else a whole percentage."""
    if n <= 0:
        return ""
    if 0 < k < min_cell or 0 < n - k < min_cell:
        return f"{'<' if k < min_cell else '>'}{min_cell if k < min_cell else n - min_cell} of {n}"
    return f"{100.0 * k / n:.0f}%"


def kanon_range(values: Sequence[float] | np.ndarray, min_cell: int) -> tuple[float, float]:
    """A range whose ends describe at least `min_cell` participants each: the mean of the
    `min_cell` smallest and of the `min_cell` largest values (``nan`` with fewer than
    ``2 * min_cell`` values); the minimum and maximum are one person's values."""
    x = np.sort(np.asarray(values, dtype=float))
    x = x[np.isfinite(x)]
    if len(x) < 2 * min_cell:
        return float("nan"), float("nan")
    return float(x[:min_cell].mean()), float(x[-min_cell:].mean())


def suppression_note(min_cell: int) -> str:
    """The footnote of a table with suppressed cells."""
    return (
        f"<{min_cell}: fewer than {min_cell} participants; {SUPPRESSED}: hidden so that a "
        f"suppressed cell cannot be recovered from the totals."
    )
