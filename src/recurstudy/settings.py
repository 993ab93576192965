"""What each workflow stage reads from the config, and a hash of the code it runs.

Snakemake re-runs a job when its ``params:`` change, but a value a script reads through
``snakemake.config`` is invisible to it, so a changed config would leave stale results looking
authoritative. Every rule therefore receives the part of the config it reads as one JSON string
parameter (:func:`stage_settings`), and scripts read the config only from there
(:func:`load_settings`, which refuses to give out a key the stage did not declare, so that a
forgotten key fails loudly in the tests instead of silently reading a default). A ``code``
parameter (:func:`source_hash`) holds the SHA-256 of the package modules the job imports, so a new
version of the code re-runs what it touches and nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from recurstudy.plan import PLAN_KEYS

PACKAGE = "recurstudy"
PACKAGE_DIR = Path(__file__).resolve().parent

# The top-level config keys each stage reads. "*" is the whole config (the report shows it all).
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "validate": ("data", "arms", "covariates", "adjust_for", "on_invalid", "end_reason_labels"),
    "derive": ("arms", "covariates", "exclude_episode_time", "washout_days", "terminal_events"),
    "power_design": ("arms",),
    "claims": (
        "arms",
        "claims",
        "multiplicity",
        "models",
        "adjust_for",
        "covariates",
        "terminal_events",
        "informative_dropout",
    ),
    "sensitivity": ("arms", "design", "adjust_for", "covariates", "models"),
    "tipping_point": (
        "arms",
        "claims",
        "models",
        "adjust_for",
        "covariates",
        "informative_dropout",
        "tipping_point",
    ),
    "report": ("*",),
}
STAGE_KEYS["plan"] = (*PLAN_KEYS, "plan")  # what defines the analysis, and the plan file
STAGE_KEYS["rates"] = ("arms",)  # recurstudy.rates reads counts.parquet by arm

# Study-wide settings that a model kind reads as an option when its own entry leaves it unset
# (recurstudy.models.model_specs): every stage that builds model specs reads them too.
OPTIONS_FROM_CONFIG = ("informative_dropout",)
for _stage, _keys in STAGE_KEYS.items():
    if "models" in _keys:
        STAGE_KEYS[_stage] = (*_keys, *(k for k in OPTIONS_FROM_CONFIG if k not in _keys))


class Settings(dict):
    """A stage's settings: a mapping that raises on a top-level key the stage did not declare
    (``get`` included), so that reading an undeclared config value is an error, not a default."""

    def __init__(self, values: Mapping[str, Any], stage: str = "") -> None:
        super().__init__(values)
        self.stage = stage

    def __missing__(self, key: str) -> Any:
        raise KeyError(
            f"config key '{key}' is not among the settings of stage '{self.stage}' "
            f"({', '.join(sorted(self))}); declare it in recurstudy.settings.STAGE_KEYS"
        )

    def get(self, key: str, default: Any = None) -> Any:  # noqa: D102 - dict.get, but strict
        return self[key]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


# Fields of list-of-mapping keys that a stage does not read (a claim's wording changes the claims
# table and the report, not the numbers of the tipping-point analysis), so that editing them does
# not re-run the stage.
STAGE_IGNORES: dict[str, dict[str, tuple[str, ...]]] = {
    "tipping_point": {"claims": ("statement",)},
}


def stage_keys(config: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The part of the (validated) config that `stage` reads."""
    keys = STAGE_KEYS[stage]
    if keys == ("*",):
        return dict(config)
    out = {k: config[k] for k in keys if k in config}
    for key, fields in STAGE_IGNORES.get(stage, {}).items():
        if isinstance(out.get(key), list):
            out[key] = [
                {f: v for f, v in item.items() if f not in fields}
                if isinstance(item, dict)
                else item
                for item in out[key]
            ]
    if stage == "tipping_point" and isinstance(out.get("models"), list):
        out["models"] = _claimed_models(out["models"], out.get("claims") or [])
    return out


def _claimed_models(models: list[Any], claims: list[Any]) -> list[Any]:
    """The model entries the claims read (an adjusted variant counts for its base entry): the
    tipping-point analysis refits only those, so another model's options do not re-run it."""
    from recurstudy.claims import claim_model

    wanted = {claim_model(c) for c in claims if isinstance(c, dict) and "metric" in c}
    wanted |= {w.removesuffix("_adjusted") for w in wanted}
    return [m for m in models if not isinstance(m, dict) or m.get("name") in wanted]


def stage_settings(config: Mapping[str, Any], stage: str) -> str:
    """The settings of `stage` as canonical JSON (a Snakemake parameter)."""
    return _dumps(stage_keys(config, stage))


def load_settings(text: str, stage: str = "") -> Settings:
    """The settings a job received as a parameter, strict about undeclared keys."""
    return Settings(json.loads(text), stage)


def spec_settings(spec: Any) -> str:
    """A model spec (``recurstudy.models.ModelSpec``) as canonical JSON."""
    return _dumps(dataclasses.asdict(spec))


def spec_from_settings(text: str) -> Any:
    """The :class:`~recurstudy.models.ModelSpec` a job received as a parameter."""
    from recurstudy.models import ModelSpec

    return ModelSpec(**json.loads(text))


# ---------------------------------------------------------------------------------- code hash


@cache
def _module_path(name: str) -> Path | None:
    """The source file of package module `name` (``recurstudy.models.base``), if any."""
    parts = name.split(".")[1:]
    base = PACKAGE_DIR.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


# An import statement of the package, anywhere in a file (indented lazy imports included):
# ``from recurstudy.x import a, b`` (parenthesised lists spanning lines too) or ``import
# recurstudy.x``. A regular expression rather than ast.parse + ast.walk: Snakemake hashes the
# package's sources at every start-up, and the syntax tree walk cost about 0.8 s of it (2 cores).
# A match inside a docstring only adds a file to the hash, never removes one.
_FROM_IMPORT = re.compile(
    rf"^[ \t]*from[ \t]+({PACKAGE}(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M
)
_PLAIN_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n]*)", re.M)


@cache
def _imports(path: Path) -> frozenset[str]:
    """The package modules a source file imports (anywhere in it, lazy imports included)."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set()
    for module, names in _FROM_IMPORT.findall(text):
        found.add(module)
        # `from recurstudy import report` imports a module, not a name
        names = re.sub(r"#[^\n]*", "", names).strip("()")
        found.update(f"{module}.{n.split()[0]}" for n in names.split(",") if n.strip())
    for names in _PLAIN_IMPORT.findall(text):
        for item in names.split("#")[0].split(","):
            words = item.split()
            if words and words[0].split(".")[0] == PACKAGE:
                found.add(words[0])
    return frozenset(found)


@cache
def _closure(roots: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or _module_path(name) is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imports(_module_path(name)))  # type: ignore[arg-type]
    return tuple(sorted(seen))


def module_closure(roots: Iterable[str]) -> list[str]:
    """`roots` and every package module they import, transitively, with their parent
    packages (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
    return list(_closure(tuple(roots)))


@cache
def source_hash(*roots: str) -> str:
    """SHA-256 over the sources of `roots` and the package modules they import (computed once
    per process: the sources do not change while Snakemake parses the workflow)."""
    h = hashlib.sha256()
    for name in module_closure(roots):
        path = _module_path(name)
        assert path is not None
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def clear_caches() -> None:
    """Forget the cached sources, imports and hashes (for tests that edit the package)."""
    for cached in (_module_path, _imports, _closure, source_hash):
        cached.cache_clear()


def model_source_hash(kind: str) -> str:
    """The code hash of model kind `kind`: its module and what that imports."""
    from recurstudy.models import get_model

    return source_hash(type(get_model(kind)).__module__)
