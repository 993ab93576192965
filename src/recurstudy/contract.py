"""The data contract in one place, as declarations: tables and their columns, row rules, links
between tables, sort keys, the id column, arm labels, the intervention term and the analysis
datasets' names.

Nothing here runs a check: :mod:`recurstudy.schemas` turns these declarations into pandera
schemas, and validation, derive, the models' callers, the workflow's rules and the report read
the names from here, so that no other module spells them out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The participant identifier: the key of every table and the cluster of every robust variance.
ID = "participant_id"
ARM = "arm"

# The cohort tables, in the order they are read and reported; pain scores are optional.
TABLES = ("participants", "episodes", "pain_scores")
REQUIRED_TABLES = ("participants", "episodes")
OPTIONAL_TABLES = ("pain_scores",)
# Tables that must have at least one data row (a cohort may have no episodes or pain scores).
NON_EMPTY_TABLES = ("participants",)

# The analysis datasets derive writes (results/analysis/<name>.parquet).
DATASETS = ("first_episode", "counting_process", "counts")

# Roles of the two arms and their default labels in the participants' `arm` column.
DEFAULT_ARMS = {"control": "control", "intervention": "intervention"}

# The formula libraries' name of the intervention coefficient (treatment contrast vs control).
INTERVENTION_TERM = "arm[T.{label}]"

# Values of the optional `end_reason` column and the types a declared covariate may have.
END_REASONS = ("completed", "withdrawn", "lost_to_followup", "death")
COVARIATE_TYPES = ("numeric", "integer", "categorical", "boolean")
# A covariate type's column kind (the parser that reads it); `categorical` is text.
COVARIATE_KINDS = {"numeric": "number", "integer": "integer", "boolean": "boolean"}

# Columns that the contract or the derived datasets define: a covariate may not take these names
# (it would be overwritten by, or collide with, a derived column).
RESERVED_COLUMNS = (
    ID,
    ARM,
    "enrolled_on",
    "followup_end",
    "episode",
    "start",
    "stop",
    "gap",
    "event",
    "time",
    "entry",
    "n_episodes",
    "exposure_days",
    "terminal",
)

# Check names of a missing value (the second when the adjusted models need the covariate).
CHECK_MISSING = "missing value"
CHECK_MISSING_ADJUST = "missing value (covariate in adjust_for)"


# ------------------------------------------------------------------------------------ columns


@dataclass(frozen=True)
class ColumnSpec:
    """One column of the contract: its type and what is required of it."""

    name: str
    kind: str  # "string" | "date" | "number" | "integer" | "boolean"
    required: bool = False  # the column must be present
    not_missing: bool = False  # every value must be present
    missing_check: str = CHECK_MISSING


def _required(name: str, kind: str) -> ColumnSpec:
    return ColumnSpec(name, kind, required=True, not_missing=True)


# The contract's own columns of each table (covariates declared in the config come on top).
COLUMNS: dict[str, tuple[ColumnSpec, ...]] = {
    "participants": (
        _required(ID, "string"),
        _required(ARM, "string"),
        _required("enrolled_on", "date"),
        _required("followup_end", "date"),
        ColumnSpec("site", "string"),
        ColumnSpec("end_reason", "string"),
        ColumnSpec("age", "number"),
        ColumnSpec("sex", "string"),
        ColumnSpec("baseline_pain", "number"),
        ColumnSpec("prior_episodes", "integer"),
    ),
    "episodes": (
        _required(ID, "string"),
        _required("onset_on", "date"),
        ColumnSpec("resolved_on", "date"),
        ColumnSpec("severity", "number"),
    ),
    "pain_scores": (
        _required(ID, "string"),
        _required("assessed_on", "date"),
        _required("nrs", "number"),
    ),
}
# Optional columns added as all-missing when absent (an absent resolved_on: all unresolved).
FILLED_WHEN_ABSENT = {"episodes": ("resolved_on",)}


def column_specs(table: str, config: Mapping[str, Any]) -> dict[str, ColumnSpec]:
    """The contract's columns of `table`, including the covariates declared in the config.

    A declared covariate is required (present) and, when listed under ``adjust_for``, may not be
    missing; a contract column declared as a covariate keeps its own type when that is stricter
    (``prior_episodes`` stays an integer when declared ``numeric``).
    """
    if table not in COLUMNS:
        raise ValueError(f"unknown table {table!r}; expected one of {', '.join(TABLES)}")
    specs = {spec.name: spec for spec in COLUMNS[table]}
    if table != "participants":
        return specs
    covariates = dict(config.get("covariates") or {})
    adjust = [str(c) for c in (config.get("adjust_for") or [])]
    for name in [*covariates, *[a for a in adjust if a not in covariates]]:
        if name in (ID, ARM, "enrolled_on", "followup_end"):
            continue
        own = specs.get(name)
        kind = own.kind if own is not None else "string"
        if name in covariates:
            declared = COVARIATE_KINDS.get(str(covariates[name]), "string")
            if own is None or not (own.kind == "integer" and declared == "number"):
                kind = declared
        specs[name] = ColumnSpec(
            name,
            kind,
            required=True,
            not_missing=name in adjust,
            missing_check=CHECK_MISSING_ADJUST if name in adjust else CHECK_MISSING,
        )
    return specs


# ---------------------------------------------------------------------------------- row rules


@dataclass(frozen=True)
class Range:
    """``low <= column <= high`` (either bound may be open)."""

    column: str
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class OneOf:
    """The value is one of `allowed`; ``allowed=None`` means the two configured arm labels."""

    column: str
    allowed: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Compare:
    """``column op other`` within a row (rows where either side is missing pass)."""

    column: str
    op: str  # ">=", ">", "<=", "<"
    other: str


@dataclass(frozen=True)
class Unique:
    """No two rows share the values of `keys`; reported on `column` for every copy."""

    keys: tuple[str, ...]
    column: str


RowRule = Range | OneOf | Compare | Unique

ROW_RULES: dict[str, tuple[RowRule, ...]] = {
    "participants": (
        Unique((ID,), ID),
        OneOf(ARM),
        Compare("followup_end", ">=", "enrolled_on"),
        OneOf("end_reason", END_REASONS),
        Range("age", 16, 100),
        Range("baseline_pain", 0, 10),
        Range("prior_episodes", 0, None),
    ),
    "episodes": (
        Unique((ID, "onset_on"), "onset_on"),
        Compare("resolved_on", ">=", "onset_on"),
        Range("severity", 0, 10),
    ),
    "pain_scores": (
        Unique((ID, "assessed_on"), "assessed_on"),
        Range("nrs", 0, 10),
    ),
}


# ------------------------------------------------------------------------- links across tables


@dataclass(frozen=True)
class LinkRule:
    """A child table's row belongs to a known participant and its date lies in their follow-up:
    ``date low_op enrolled_on`` and ``date high_op followup_end``.

    ``under_way``: a row whose date is on or before enrolment still passes the first comparison
    when this column (the end of the row's span) is after enrolment: an episode under way at
    enrolment (``onset_on <= enrolled_on < resolved_on``). A missing end fails there: an episode
    begun before enrolment needs its resolution date.
    """

    date: str
    low_op: str
    high_op: str
    under_way: str | None = None


LINK_RULES: dict[str, LinkRule] = {
    "episodes": LinkRule("onset_on", ">", "<=", under_way="resolved_on"),
    "pain_scores": LinkRule("assessed_on", ">=", "<="),
}

# How the clean tables are sorted (write_clean_tables); lists, as pandas' sort_values takes them.
SORT_KEYS: dict[str, list[str]] = {
    "participants": [ID],
    "episodes": [ID, "onset_on"],
    "pain_scores": [ID, "assessed_on"],
}


# ------------------------------------------------------------------------------ arms and terms


def arm_labels(config: Mapping[str, Any]) -> tuple[str, str]:
    """The (control, intervention) labels of the ``arm`` column."""
    arms = {**DEFAULT_ARMS, **(config.get("arms") or {})}
    return str(arms["control"]), str(arms["intervention"])


def intervention_term(config: Mapping[str, Any]) -> str:
    """The tidy term of the intervention effect, e.g. ``arm[T.intervention]``."""
    return INTERVENTION_TERM.format(label=arm_labels(config)[1])


def natural_key(text: object) -> tuple:
    """Sort key that orders embedded numbers by value: ``inst2`` before ``inst10``."""
    parts = re.split(r"(\d+)", str(text))
    return tuple((0, int(p), p) if p.isdigit() else (1, p.casefold(), p) for p in parts if p)


def natural_sorted(values: Iterable[Any]) -> list:
    """`values` (distinct, missing values dropped) in natural order."""
    import pandas as pd

    return sorted({v for v in values if not pd.isna(v)}, key=natural_key)
