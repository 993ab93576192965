"""Load and validate the study configuration (config/config.yaml against config/schema.yaml).

Snakemake validates the same file with the same schema (`snakemake.utils.validate`), so the
workflow and the library see identical defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from recurstudy import contract

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


class ConfigError(Exception):
    """The configuration file is missing or does not match config/schema.yaml."""


# Columns that the contract or the derived datasets define (a covariate may not take these names).
RESERVED_COLUMNS = contract.RESERVED_COLUMNS


@cache
def schema() -> dict[str, Any]:
    """The config schema (config/schema.yaml), read once; callers must not modify it."""
    # libyaml's safe loader where PyYAML was built with it: the same documents, 0.2 s less of
    # every Snakemake start-up than the pure-Python loader
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(SCHEMA_PATH.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506


def schema_default(key: str) -> Any:
    """The schema's default of top-level `key` (e.g. the default model set)."""
    import copy

    return copy.deepcopy(schema()["properties"][key].get("default"))


def _where(path) -> str:
    """A JSON-schema error path as the config key a user writes: ``models[3].options``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _schema_errors(config: dict[str, Any]) -> list[str]:
    """Every schema violation as one line naming the key: no schema dump."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    lines = []
    for err in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.path]):
        message = err.message if len(err.message) <= 200 else err.message[:200] + "..."
        lines.append(f"{_where(err.path)}: {message}")
    return lines


def _claim_errors(config: dict[str, Any]) -> list[str]:
    """`claimed` is a fraction in (0, 1); a value that looks like a percentage gets a hint."""
    lines = []
    for i, claim in enumerate(config.get("claims") or []):
        if not isinstance(claim, dict):
            continue
        value = claim.get("claimed")
        where = f"claims[{i}] ('{claim.get('id', '?')}').claimed"
        if isinstance(value, bool) or not isinstance(value, int | float):
            if value is not None:
                lines.append(f"{where}: must be a number in (0, 1), not {value!r}")
            continue
        if not 0 < value < 1:
            hint = ""
            if 1 <= value < 100:
                hint = f"; {value:g} looks like a percentage: write claimed: {value / 100:g}"
            elif value <= 0:
                hint = "; claims are reductions (0.68 = 68% fewer); an increase cannot be claimed"
            lines.append(f"{where}: must be a fraction in (0, 1), not {value!r}{hint}")
    return lines


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate `config` in place against the schema, filling in defaults; return it.

    Every problem is collected and reported in one :class:`ConfigError` whose lines each name
    the key and what is allowed.
    """
    from snakemake.utils import validate

    if not isinstance(config, dict):
        raise ConfigError("invalid configuration: the config must be a mapping of keys")
    arms = config.get("arms")
    if isinstance(arms, dict):
        # Labels are compared with the arm column as text: `control: 1` means the label "1".
        for role, label in list(arms.items()):
            if isinstance(label, int | float) and not isinstance(label, bool):
                arms[role] = str(label)
    claim_lines = _claim_errors(config)
    lines = claim_lines + [
        line
        for line in _schema_errors(config)
        if not (claim_lines and ".claimed:" in line)  # said once, with the hint
    ]
    if lines:
        raise ConfigError(_message(lines))
    validate(config, str(SCHEMA_PATH), set_default=True)  # Snakemake fills in the defaults
    lines = []
    control, intervention = config["arms"]["control"], config["arms"]["intervention"]
    if control == intervention:
        lines.append(f"arms: control and intervention have the same label '{control}'")
    reserved = sorted(set(config.get("covariates", {})) & set(RESERVED_COLUMNS))
    if reserved:
        lines.append(
            f"covariates: may not be named {', '.join(reserved)}: those names are reserved for "
            f"the contract's and the derived datasets' columns; rename the column"
        )
    for key in config.get("adjust_for", []):
        if key not in config.get("covariates", {}):
            lines.append(f"adjust_for: '{key}' is not declared under covariates:")
    ids = [c["id"] for c in config.get("claims", [])]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        lines.append(f"claims: the id '{dup}' is used twice")
    primary = [c["id"] for c in config.get("claims", []) if c.get("primary")]
    if len(primary) > 1:
        lines.append(f"claims: only one claim can be primary, not {', '.join(primary)}")
    lines += _intercurrent_errors(config)
    lines += _model_and_claim_errors(config)
    if lines:
        raise ConfigError(_message(lines))
    return config


def _intercurrent_errors(config: dict[str, Any]) -> list[str]:
    """``terminal_events`` and ``informative_dropout`` list contract end reasons, and no reason is
    both (a terminal event ends the process; dropout only censors it)."""
    allowed = contract.END_REASONS
    lines = []
    for key in ("terminal_events", "informative_dropout"):
        for value in config.get(key, []):
            if value not in allowed:
                lines.append(
                    f"{key}: '{value}' is not an end_reason of the contract "
                    f"({', '.join(allowed)}); map a study's own label with end_reason_labels:"
                )
    both = sorted(
        set(config.get("terminal_events", [])) & set(config.get("informative_dropout", []))
    )
    if both:
        lines.append(
            f"informative_dropout: {', '.join(both)} is also under terminal_events; a reason is "
            f"either a terminal event or a dropout, not both"
        )
    return lines


def terminal_events(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The end reasons that are terminal events (config ``terminal_events``; default death)."""
    value = config["terminal_events"] if "terminal_events" in config else None
    return tuple(schema_default("terminal_events") if value is None else value)


def informative_dropout(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The end reasons whose censoring may be informative (config ``informative_dropout``;
    default withdrawn)."""
    value = config["informative_dropout"] if "informative_dropout" in config else None
    return tuple(schema_default("informative_dropout") if value is None else value)


def _message(lines: list[str]) -> str:
    if len(lines) == 1:
        return f"invalid configuration: {lines[0]}"
    return "invalid configuration:\n" + "\n".join(f"  - {line}" for line in lines)


def _model_and_claim_errors(config: dict[str, Any]) -> list[str]:
    """Every model kind exists with valid options, names are unique, and each claim reads a
    configured model that can serve its metric."""
    from recurstudy.claims import DEFAULT_MODEL
    from recurstudy.formula import FormulaError, check_formula
    from recurstudy.models import described_models

    lines = []
    names = ["arm", *config.get("covariates", {})]
    for i, entry in enumerate(config.get("models") or []):
        formulas = [("formula", entry.get("formula", "arm"))]
        if "inflation" in (entry.get("options") or {}):
            formulas.append(("options.inflation", entry["options"]["inflation"]))
        for key, text in formulas:
            try:
                check_formula(str(text), names)
            except FormulaError as exc:
                lines.append(f"models[{i}] ('{entry.get('name')}').{key}: {exc}")
    if lines:
        return lines
    try:
        described = described_models(config)
    except (KeyError, ValueError) as exc:
        return [f"models: {exc.args[0]}"]
    for i, claim in enumerate(config.get("claims", [])):
        model = claim.get("model") or DEFAULT_MODEL[claim["metric"]]
        where = f"claims[{i}] ('{claim['id']}')"
        if model not in described:
            lines.append(
                f"{where}: reads model '{model}', which is not among the configured models "
                f"({', '.join(sorted(described))})"
            )
            continue
        if claim["metric"] not in described[model].claim_metrics:
            serve = sorted(n for n, d in described.items() if claim["metric"] in d.claim_metrics)
            lines.append(
                f"{where}: metric {claim['metric']} cannot be read from model '{model}' "
                f"({described[model].title}); models that serve it: {', '.join(serve) or 'none'}"
            )
    return lines


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


def level_order(config: dict[str, Any], name: str, values) -> list:
    """The categories of covariate `name` in display order: those listed under
    ``study.labels.<name>.levels`` first, in that order, then the rest in natural order
    (``inst2`` before ``inst10``)."""
    from recurstudy.contract import natural_sorted

    entry = ((config.get("study") or {}).get("labels") or {}).get(name) or {}
    present = natural_sorted(values)
    given = [v for v in (entry.get("levels") or []) if v in set(present)]
    return given + [v for v in present if v not in set(given)]


# The key that makes Snakemake render a config file with yte (Python expressions run at load).
TEMPLATING_KEY = "__use_yte__"


def _read_config_text(path: Path) -> str:
    """The text of config file `path`; a FIFO, device or directory is refused before opening
    (opening a FIFO would block)."""
    from recurstudy.io import not_regular

    try:
        irregular = not_regular(path)  # stat only: never opens
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    if irregular:
        raise ConfigError(f"cannot read config file {path}: not a regular file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read config file {path}: {why}") from None


def refuse_templating(path: str | Path) -> str:
    """Refuse a config file that Snakemake would render as a yte template; return its text.

    A YAML config with a top-level ``__use_yte__: true`` is rendered by Snakemake's config
    loader with yte, whose ``?`` expressions run Python (even under ``snakemake -n``). A config
    is data, so any mention of the key is refused, found in the raw text or, written with
    escapes, among the top-level keys of a safe parse. Call this before Snakemake or yte reads
    the file; the file is never handed to yte here.
    """
    path = Path(path)
    text = _read_config_text(path)
    found = TEMPLATING_KEY in text
    if not found:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None  # load_config reports the syntax error
        found = isinstance(data, dict) and TEMPLATING_KEY in {str(k) for k in data}
    if found:
        raise ConfigError(
            f"config file {path}: {TEMPLATING_KEY}: templated configs are refused (a config is "
            f"data; Snakemake would run the yte template's Python when loading it); remove the "
            f"{TEMPLATING_KEY} key and write the values out"
        )
    return text


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file (refusing templates, :func:`refuse_templating`), validate it and
    fill in defaults."""
    path = Path(path)
    text = refuse_templating(path)
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys")
    return validate_config(config)


def main(argv: list[str] | None = None) -> int:
    """``python -m recurstudy.config FILE...``: check config files (templating, schema) before
    handing them to Snakemake; exit 2 with the message naming the key if one is refused."""
    import sys

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m recurstudy.config CONFIG.yaml [...]", file=sys.stderr)
        return 2
    for p in paths:
        try:
            load_config(p)
        except ConfigError as exc:
            print(f"recurstudy: {exc}", file=sys.stderr)
            return 2
        print(f"{p}: ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
