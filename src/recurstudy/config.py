"""Load and validate the study configuration (config/config.yaml against config/schema.yaml).

Snakemake validates the same file with the same schema (`snakemake.utils.validate`), so the
workflow and the library see identical defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from recurstudy import contract

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


class ConfigError(Exception):
    """The configuration file is missing or does not match config/schema.yaml."""


# Columns that the contract or the derived datasets define (a covariate may not take these names).
RESERVED_COLUMNS = contract.RESERVED_COLUMNS


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate `config` in place against the schema, filling in defaults; return it."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    arms = config.get("arms")
    if isinstance(arms, dict):
        # Labels are compared with the arm column as text: `control: 1` means the label "1".
        for role, label in list(arms.items()):
            if isinstance(label, int | float) and not isinstance(label, bool):
                arms[role] = str(label)
    try:
        validate(config, str(SCHEMA_PATH), set_default=True)
    except WorkflowError as exc:  # its message names the offending key
        raise ConfigError(f"invalid configuration: {exc}") from None
    reserved = sorted(set(config.get("covariates", {})) & set(RESERVED_COLUMNS))
    if reserved:
        raise ConfigError(
            f"invalid configuration: covariates may not be named {', '.join(reserved)}: "
            f"those names are reserved for the contract's and the derived datasets' columns "
            f"({', '.join(RESERVED_COLUMNS)}); rename the column"
        )
    for key in config.get("adjust_for", []):
        if key not in config.get("covariates", {}):
            raise ConfigError(
                f"invalid configuration: adjust_for names '{key}', which is not declared under "
                "covariates:"
            )
    _check_models_and_claims(config)
    return config


def _check_models_and_claims(config: dict[str, Any]) -> None:
    """Every model kind exists, names are unique, and each claim reads a configured model."""
    from recurstudy.claims import DEFAULT_MODEL
    from recurstudy.models import model_specs

    try:
        names = {spec.name for spec in model_specs(config)}
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc.args[0]}") from None
    for claim in config.get("claims", []):
        model = claim.get("model") or DEFAULT_MODEL[claim["metric"]]
        if model not in names:
            raise ConfigError(
                f"invalid configuration: claim '{claim['id']}' reads model '{model}', which is "
                f"not among the configured models ({', '.join(sorted(names))})"
            )


def study_text(config: dict[str, Any]) -> dict[str, str]:
    """How the report speaks of the study: ``title``, ``event`` and ``events`` (its plural)."""
    study = config.get("study") or {}
    event = str(study.get("event") or "episode")
    return {
        "title": str(study.get("title") or "Outcome study report"),
        "event": event,
        "events": str(study.get("event_plural") or f"{event}s"),
    }


def covariate_label(config: dict[str, Any], name: str) -> str:
    """A covariate's display label with its unit, e.g. ``Age (years)``; the name when unset."""
    entry = ((config.get("study") or {}).get("labels") or {}).get(name) or {}
    label = str(entry.get("label") or name)
    unit = entry.get("unit")
    return f"{label} ({unit})" if unit else label


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, validate it and fill in defaults."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    return validate_config(config)
