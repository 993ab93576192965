"""The pre-specified analysis plan: lock it before the data are analysed, check every run
against it.

``recurstudy plan lock --config RUN/config.yaml`` writes the plan file (``plan:`` in the config,
default ``plan.lock.json`` in the run folder): the SHA-256 of everything that defines the analysis
(:data:`PLAN_KEYS`: the claims with their models and estimands, the models, the covariates, the
risk-set settings, the multiplicity rule...) with the date it was locked. Each run writes
``results/plan_status.json``: whether its analysis matches a locked plan, which the manifest
records and the report states on its first screen ("pre-specified: plan locked on DATE" or "not
pre-specified").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# What defines the analysis (data paths, the report's wording and power settings do not).
PLAN_KEYS = (
    "arms",
    "covariates",
    "adjust_for",
    "on_invalid",
    "end_reason_labels",
    "exclude_episode_time",
    "washout_days",
    "terminal_events",
    "informative_dropout",
    "design",
    "models",
    "claims",
    "multiplicity",
)
DEFAULT_PLAN = "plan.lock.json"


class PlanError(Exception):
    """The plan file cannot be written or read."""


def plan_definition(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a (validated) config that defines the analysis."""
    return {k: config[k] for k in PLAN_KEYS if k in config}


def plan_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of :func:`plan_definition`."""
    text = json.dumps(plan_definition(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def plan_path(config: Mapping[str, Any], run_dir: str | Path = ".") -> Path:
    """The plan file of a run (``plan:`` relative to the run folder; it must stay inside it)."""
    name = str(config.get("plan") or DEFAULT_PLAN)
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise PlanError(f"plan: '{name}' must be a path inside the run folder")
    return Path(run_dir) / rel


def lock(config: Mapping[str, Any], path: str | Path, today: str | None = None) -> dict[str, Any]:
    """Write the plan file for `config` at `path` (refusing to overwrite a different plan)."""
    path = Path(path)
    record = {
        "locked_on": today or datetime.now(UTC).date().isoformat(),
        "sha256": plan_hash(config),
        "definition": plan_definition(config),
    }
    if path.exists():
        old = read(path)
        if old.get("sha256") == record["sha256"]:
            return old  # already locked: the original date stands
        raise PlanError(
            f"{path} already holds a plan locked on {old.get('locked_on')} with another "
            "analysis; a locked plan is not overwritten (remove it deliberately to re-lock)"
        )
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return record


def read(path: str | Path) -> dict[str, Any]:
    """A plan file's record."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PlanError(f"cannot read the plan file {path}: {exc}") from None
    if not isinstance(record, dict) or "sha256" not in record:
        raise PlanError(f"{path} is not a recurstudy plan file")
    return record


def status(config: Mapping[str, Any], path: str | Path | None) -> dict[str, Any]:
    """Whether the run's analysis matches the locked plan at `path` (None: no plan file)."""
    current = plan_hash(config)
    if path is None or not Path(path).exists():
        return {
            "prespecified": False,
            "locked_on": None,
            "sha256": current,
            "plan_sha256": None,
            "changed": [],
            "statement": "not pre-specified: no plan was locked",
        }
    record = read(path)
    locked_on = record.get("locked_on")
    if record["sha256"] == current:
        return {
            "prespecified": True,
            "locked_on": locked_on,
            "sha256": current,
            "plan_sha256": record["sha256"],
            "changed": [],
            "statement": f"pre-specified: plan locked on {locked_on}",
        }
    old = record.get("definition") or {}
    now = plan_definition(config)
    changed = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
    return {
        "prespecified": False,
        "locked_on": locked_on,
        "sha256": current,
        "plan_sha256": record["sha256"],
        "changed": changed,
        "statement": (
            f"not pre-specified: the analysis differs from the plan locked on {locked_on} "
            f"({', '.join(changed) or 'definition'} changed)"
        ),
    }
