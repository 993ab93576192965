"""The data contract in one place: tables, the id column, arm labels, the intervention term and
the analysis datasets' names.

Schemas (``recurstudy.schemas``), validation, derive, the workflow's rules and the report read
these names from here; nothing else spells them out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The participant identifier: the key of every table and the cluster of every robust variance.
ID = "participant_id"
ARM = "arm"

# The cohort tables, in the order they are read and reported; pain scores are optional.
TABLES = ("participants", "episodes", "pain_scores")
REQUIRED_TABLES = ("participants", "episodes")
OPTIONAL_TABLES = ("pain_scores",)

# The analysis datasets derive writes (results/analysis/<name>.parquet).
DATASETS = ("first_episode", "counting_process", "counts")

# Roles of the two arms and their default labels in the participants' `arm` column.
DEFAULT_ARMS = {"control": "control", "intervention": "intervention"}

# The formula libraries' name of the intervention coefficient (treatment contrast vs control).
INTERVENTION_TERM = "arm[T.{label}]"


def arm_labels(config: Mapping[str, Any]) -> tuple[str, str]:
    """The (control, intervention) labels of the ``arm`` column."""
    arms = {**DEFAULT_ARMS, **(config.get("arms") or {})}
    return str(arms["control"]), str(arms["intervention"])


def intervention_term(config: Mapping[str, Any]) -> str:
    """The tidy term of the intervention effect, e.g. ``arm[T.intervention]``."""
    return INTERVENTION_TERM.format(label=arm_labels(config)[1])


def natural_key(text: object) -> tuple:
    """Sort key that orders embedded numbers by value: ``inst2`` before ``inst10``."""
    import re

    parts = re.split(r"(\d+)", str(text))
    return tuple((0, int(p), p) if p.isdigit() else (1, p.casefold(), p) for p in parts if p)


def natural_sorted(values) -> list:
    """`values` (distinct, missing values dropped) in natural order."""
    import pandas as pd

    return sorted({v for v in values if not pd.isna(v)}, key=natural_key)
