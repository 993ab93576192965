"""Models: one module per family, registered by kind; the config picks and names them.

Every module in this package is imported on first use, so a new model is one module (a class
decorated with :func:`recurstudy.models.base.register`) plus one entry under ``models:`` in the
config. See docs/extending.md.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import pkgutil
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from recurstudy.config import schema_default
from recurstudy.csvout import write_csv
from recurstudy.models.base import (
    REGISTRY,
    TIDY_COLUMNS,
    Model,
    ModelDescription,
    ModelResult,
    ModelSpec,
    NotEstimable,
    OptionError,
    failed,
    parse_options,
)
from recurstudy.settings import OPTIONS_FROM_CONFIG

__all__ = [
    "TIDY_COLUMNS",
    "ModelResult",
    "ModelSpec",
    "NotEstimable",
    "described_models",
    "OptionError",
    "fit_spec",
    "get_model",
    "model_specs",
    "write_result",
]

log = logging.getLogger(__name__)

# OPTIONS_FROM_CONFIG (recurstudy.settings): top-level config keys that a model kind may declare
# as an option of the same name; left unset (None) in the model's entry, the option takes the
# config's value, so that it reaches the fit through the spec (and a changed config re-runs it).

_loaded = False


def _load_all() -> None:
    """Import every model module once, so that their @register decorators run."""
    global _loaded
    if _loaded:
        return
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name not in ("base",):
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def get_model(kind: str) -> Model:
    """An instance of the model registered under `kind`."""
    _load_all()
    if kind not in REGISTRY:
        known = ", ".join(sorted(REGISTRY))
        raise KeyError(f"unknown model kind '{kind}' (known kinds: {known})")
    return REGISTRY[kind]()


def _quote(name: str) -> str:
    """A column name as a formula term (backticks when it is not a plain identifier)."""
    return name if name.isidentifier() else f"`{name}`"


def model_specs(config: dict[str, Any]) -> list[ModelSpec]:
    """Every model the config asks for, adjusted variants (`<name>_adjusted`) included."""
    _load_all()
    entries = config.get("models") or schema_default("models")
    arms = config.get("arms", {"control": "control", "intervention": "intervention"})
    adjust = list(config.get("adjust_for", []))
    specs: list[ModelSpec] = []
    for entry in entries:
        model = get_model(entry["kind"])
        formula = entry.get("formula", "arm")
        parsed = parse_options(model.Options, entry.get("options"), entry["name"])
        options = dataclasses.asdict(parsed)
        for key in OPTIONS_FROM_CONFIG:  # a study-wide setting a kind reads as an option
            if key in options and options[key] is None and config.get(key) is not None:
                options[key] = list(config[key])
        specs.append(ModelSpec(entry["name"], entry["kind"], formula, options, dict(arms)))
        if model.adjustable and entry.get("adjusted", True) and adjust:
            present = {t.strip().strip("`") for t in formula.split("~")[-1].split("+")}
            extra = [_quote(c) for c in adjust if c not in present]
            specs.append(
                ModelSpec(
                    f"{entry['name']}_adjusted",
                    entry["kind"],
                    " + ".join([formula, *extra]),
                    options,
                    dict(arms),
                )
            )
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"model names must be unique; repeated: {', '.join(dup)}")
    return specs


def described_models(config: dict[str, Any]) -> dict[str, ModelDescription]:
    """Every configured model (adjusted variants included, in config order) by name, with the
    description its kind gives for its options."""
    return {s.name: get_model(s.kind).describe(s) for s in model_specs(config)}


def fit_spec(spec: ModelSpec, data: dict[str, pd.DataFrame | None]) -> ModelResult:
    """Fit one model; a failure of any kind becomes a result with converged = False."""
    model = get_model(spec.kind)
    missing = [d for d in model.datasets if data.get(d) is None]
    if missing:
        return failed(spec, f"skipped: no {', '.join(missing)} table in this study")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)
            return model.fit(spec, **{d: data[d] for d in model.datasets})
    except NotEstimable as exc:  # the one error path: the reason becomes the failed row
        return exc.result(spec)
    except Exception as exc:  # the workflow goes on; the message says what went wrong
        log.exception("model %s failed", spec.name)
        return failed(spec, f"failed: {type(exc).__name__}: {exc}")


def write_result(result: ModelResult, csv: str | Path, extras_dir: str | Path) -> None:
    """Write the tidy table and each extra table (deterministic CSV, 10 significant digits)."""
    extras_dir = Path(extras_dir)
    extras_dir.mkdir(parents=True, exist_ok=True)
    table = result.table.reindex(columns=TIDY_COLUMNS)
    write_csv(table, csv)
    for key, frame in sorted(result.extras.items()):
        write_csv(frame, extras_dir / f"{key}.csv")


def stack_estimates(paths: list[str | Path]) -> pd.DataFrame:
    """All tidy tables in one frame, in the given order (results/estimates.csv)."""
    frames = [pd.read_csv(p) for p in paths]
    if not frames:
        return pd.DataFrame(columns=TIDY_COLUMNS)
    return pd.concat(frames, ignore_index=True)[TIDY_COLUMNS]
