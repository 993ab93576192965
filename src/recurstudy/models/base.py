"""The contract every model follows: a spec in, one tidy result format out.

A model is a class registered under a `kind` (the config's ``kind:``) with a ``fit`` method that
takes the analysis datasets it declares and returns a :class:`ModelResult`. Its tidy table has the
columns of :data:`TIDY_COLUMNS` (estimates on the log scale, as lifelines' ``summary`` and
statsmodels' results do); model-specific extras (survival tables, tests, dispersion) are further
tidy frames written beside it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from recurstudy.contract import DEFAULT_ARMS, INTERVENTION_TERM
from recurstudy.lazy import lazy_import

special = lazy_import("scipy.special")


# The normal, chi-square and t tails the fits report, as scipy.stats computes them (its norm,
# chi2 and t call these scipy.special functions; tests/test_settings.py checks equality on
# grids) without importing scipy.stats: about a second of every model job's start-up, for
# four functions (benchmarks/run.py, the cgd case).
def norm_sf(x: Any) -> Any:
    """The standard normal upper tail (scipy.stats.norm.sf)."""
    return special.ndtr(-np.asarray(x, dtype=float))


def norm_ppf(q: Any) -> Any:
    """The standard normal quantile (scipy.stats.norm.ppf)."""
    return special.ndtri(q)


def chi2_sf(x: Any, df: Any) -> Any:
    """The chi-square upper tail (scipy.stats.chi2.sf): 1 below the support, NaN if df <= 0."""
    x, df = np.asarray(x, dtype=float), np.asarray(df, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(df > 0, special.chdtrc(df, np.maximum(x, 0.0)), np.nan)


def t_sf(x: Any, df: Any) -> Any:
    """Student's t upper tail (scipy.stats.t.sf)."""
    return special.stdtr(df, -np.asarray(x, dtype=float))


def t_ppf(q: Any, df: Any) -> Any:
    """Student's t quantile for q in (0, 1) (scipy.stats.t.ppf)."""
    return special.stdtrit(df, q)


TIDY_COLUMNS = [
    "model",
    "term",
    "estimate",
    "std_error",
    "robust",
    "statistic",
    "p_value",
    "conf_low",
    "conf_high",
    "exp_estimate",
    "exp_conf_low",
    "exp_conf_high",
    "n_participants",
    "n_events",
    "log_likelihood",
    "converged",
    "message",
]


@dataclass
class ModelSpec:
    """One configured model: its name, kind, right-hand side of the formula and options."""

    name: str
    kind: str
    formula: str = "arm"
    options: dict[str, Any] = field(default_factory=dict)
    arms: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ARMS))
    conf_level: float = 0.95

    @property
    def intervention_term(self) -> str:
        """The formula libraries' name of the intervention coefficient, e.g. arm[T.intervention]."""
        return INTERVENTION_TERM.format(label=self.arms["intervention"])


@dataclass
class ModelResult:
    """What a fit returns: the tidy table, named extra tables, and whether it converged."""

    table: pd.DataFrame
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)
    converged: bool = True
    message: str = ""


@dataclass(frozen=True)
class ExtraTable:
    """One extra table a model writes (``results/models/<name>/<file>.csv``) and how the report
    shows it: its caption, and the report section it belongs to (``diagnostics``: the model
    diagnostics section; ``appendix``: the statistical appendix; ``hidden``: written, not shown)."""

    file: str
    caption: str
    section: str = "diagnostics"


@dataclass(frozen=True)
class NoOptions:
    """A model kind without options: any key under ``options:`` is an error."""


class OptionError(ValueError):
    """A model's ``options:`` entry that its kind does not declare, or a value it does not allow."""


def option(
    default: Any = None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    doc: str = "",
) -> Any:
    """A field of a model's `Options` dataclass with a range and a one-line description."""
    meta = {
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "doc": doc,
    }
    return field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    import types
    import typing

    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _conforms(value: Any, tp: Any) -> bool:
    """Whether a YAML value has the declared type (bool is not a number; an int is a float)."""
    import types
    import typing

    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_conforms(v, inner) for v in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return tp is Any


def allowed_options(options_cls: type) -> str:
    """The options a kind declares, as ``name (type, default ...)`` for error messages."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(options_cls)
    parts = []
    for f in dataclasses.fields(options_cls):
        text = f"{f.name} ({_type_name(hints[f.name])}, default {f.default!r}"
        lo, hi = f.metadata.get("minimum"), f.metadata.get("maximum")
        if lo is not None:
            text += f", {'>' if f.metadata.get('exclusive_minimum') else '>='} {lo:g}"
        if hi is not None:
            text += f", <= {hi:g}"
        parts.append(text + ")")
    return ", ".join(parts) or "none"


def parse_options(options_cls: type, values: dict[str, Any] | None, model: str) -> Any:
    """Check a model's ``options:`` against its kind's `Options` dataclass; return the instance
    (defaults filled in). Raises :class:`OptionError` naming the model, the key and what is
    allowed."""
    import dataclasses
    import typing

    values = dict(values or {})
    hints = typing.get_type_hints(options_cls)
    fields = {f.name: f for f in dataclasses.fields(options_cls)}
    allowed = allowed_options(options_cls)
    for key, value in values.items():
        if key not in fields:
            raise OptionError(
                f"model '{model}': unknown option '{key}'; allowed options: {allowed}"
            )
        tp, meta = hints[key], fields[key].metadata
        if not _conforms(value, tp):
            raise OptionError(
                f"model '{model}': option '{key}' must be {_type_name(tp)}, not {value!r}"
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            lo, hi = meta.get("minimum"), meta.get("maximum")
            strict = meta.get("exclusive_minimum", False)
            if lo is not None and (value <= lo if strict else value < lo):
                rel = ">" if strict else ">="
                raise OptionError(
                    f"model '{model}': option '{key}' must be {rel} {lo:g}, not {value!r}"
                )
            if hi is not None and value > hi:
                raise OptionError(
                    f"model '{model}': option '{key}' must be <= {hi:g}, not {value!r}"
                )
    return options_cls(**values)


# The estimand families a model's intervention effect belongs to (how the report groups the
# forest plot, and what the E-value means): "marginal rate" (population-averaged episode rates or
# means), "first-episode hazard", "conditional" (given the episode history or a frailty: no
# population-level interpretation), "mean difference" and "descriptive" (no single effect).
ESTIMAND_GROUPS = (
    "marginal rate",
    "first-episode hazard",
    "conditional",
    "mean difference",
    "descriptive",
)


@dataclass(frozen=True)
class ModelDescription:
    """What a model says about itself, so that the report, the methods and the claims need no
    table of kinds: its plain title, effect measure (``None`` when the intervention term is not a
    ratio on the exp scale, e.g. a mean difference or a descriptive model), a one-line estimand,
    its extra tables with captions, and the claim metrics it can serve."""

    kind: str
    title: str
    effect_measure: str | None
    estimand: str
    extras: tuple[ExtraTable, ...] = ()
    claim_metrics: tuple[str, ...] = ()
    ratio: bool = True  # exp(estimate) of the intervention term is the effect (a ratio)
    group: str = ""  # the estimand family: see ESTIMAND_GROUPS
    reference: str = ""  # the method's reference, e.g. "Andersen and Gill (1982)"
    r_call: str = ""  # the equivalent R call
    # (intercurrent event, ICH E9(R1) strategy sentence) pairs, for "terminal event" and
    # "informative dropout"; empty: the default of the model's estimand group (see
    # :func:`default_strategies`), so a model states its own only when it differs.
    strategies: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not self.strategies:
            object.__setattr__(
                self, "strategies", default_strategies(self.group, self.effect_measure)
            )


# The intercurrent events a model's strategy is stated for (config: terminal_events,
# informative_dropout).
INTERCURRENT_EVENTS = ("terminal event", "informative dropout")

_DROPOUT_CENSORED = (
    "hypothetical: as if participants who dropped out had stayed in follow-up, assuming their "
    "dropout is independent of the episodes given the model's covariates (censoring at random)"
)
_DROPOUT_MAR = (
    "hypothetical: as if participants who dropped out had gone on being assessed, assuming "
    "their missing scores are missing at random given the scores observed and the covariates"
)


def default_strategies(group: str, effect_measure: str | None) -> tuple[tuple[str, str], ...]:
    """The ICH E9(R1) strategies of a model that, as all but the Ghosh-Lin model do, treats a
    terminal event and a dropout as censoring (or, for a pain-score model, as missing data).

    Rate and hazard models condition on being alive and followed, so for death they estimate a
    while-alive (conditional) rate; a mean number of episodes computed with death as censoring
    is instead the mean in a hypothetical world without death.  Dropout is censoring at random:
    the hypothetical strategy, valid only if dropout does not depend on the episodes.
    """
    measure = (effect_measure or "").lower()
    if group == "mean difference":
        terminal = (
            "hypothetical: pain scores stop at death and the mixed model's mean is that of a "
            "population whose members who died had gone on being assessed (missing at random)"
        )
        return (("terminal event", terminal), ("informative dropout", _DROPOUT_MAR))
    if group == "first-episode hazard":
        terminal = (
            "while alive: a death before the first episode censors it, so the effect is on the "
            "hazard of a first episode among participants still alive (a cause-specific hazard), "
            "not on the probability of ever having one"
        )
    elif "mean" in measure:
        terminal = (
            "hypothetical: death is treated as censoring, so the mean number of episodes is that "
            "of a world in which nobody died (not the mean while alive; see the Ghosh-Lin model)"
        )
    else:
        terminal = (
            "while alive (conditional rate): death ends the time at risk, so the effect is on the "
            "episode rate per day alive and in follow-up, not on the number of episodes a "
            "participant has; an intervention that changes survival changes the two differently"
        )
    return (("terminal event", terminal), ("informative dropout", _DROPOUT_CENSORED))


class Model:
    """Base class of all models. Subclasses set `kind`, `datasets` and implement `fit`.

    `datasets` names the inputs ``fit`` receives as keyword arguments: any of the analysis
    datasets (``first_episode``, ``counting_process``, ``counts``) or the validated tables
    (``participants``, ``pain_scores``). `adjustable` says whether an ``<name>_adjusted`` variant
    with the configured ``adjust_for`` covariates is made by default.

    A model describes itself: `title`, `effect_measure`, `estimand`, `extras` and
    `claim_metrics` (see :class:`ModelDescription`; override :meth:`describe` when they depend on
    the options), and declares its options as a frozen dataclass `Options` (field types and
    defaults; a ``choices`` or ``min``/``max`` entry in a field's metadata restricts the values).
    The config is checked against `Options` before any work starts.
    """

    kind: ClassVar[str]
    datasets: ClassVar[tuple[str, ...]]
    adjustable: ClassVar[bool] = True
    Options: ClassVar[type] = NoOptions
    title: ClassVar[str] = ""
    effect_measure: ClassVar[str | None] = None
    estimand: ClassVar[str] = ""
    extras: ClassVar[tuple[ExtraTable, ...]] = ()
    claim_metrics: ClassVar[tuple[str, ...]] = ()
    ratio: ClassVar[bool] = True
    group: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    r_call: ClassVar[str] = ""

    def describe(self, spec: ModelSpec | None = None) -> ModelDescription:
        """This model's description (for `spec`'s options when given)."""
        return ModelDescription(
            kind=self.kind,
            title=self.title or self.kind,
            effect_measure=self.effect_measure,
            estimand=self.estimand,
            extras=tuple(self.extras),
            claim_metrics=tuple(self.claim_metrics),
            ratio=self.ratio and self.effect_measure is not None,
            group=self.group,
            reference=self.reference,
            r_call=self.r_call,
        )

    def fit(self, spec: ModelSpec, *args: Any, **data: Any) -> ModelResult:  # pragma: no cover
        """Fit on the datasets named in `datasets` (keyword arguments)."""
        raise NotImplementedError


REGISTRY: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: make a model available under its `kind`."""
    if cls.kind in REGISTRY and REGISTRY[cls.kind] is not cls:
        raise ValueError(f"two models claim the kind '{cls.kind}'")
    REGISTRY[cls.kind] = cls
    return cls


def tidy(
    spec: ModelSpec,
    terms: list[str],
    estimate: np.ndarray,
    std_error: np.ndarray,
    *,
    robust: bool,
    n_participants: int,
    n_events: int,
    log_likelihood: float | None,
    converged: bool = True,
    message: str = "",
    df_resid: float | None = None,
) -> pd.DataFrame:
    """Build the tidy table from estimates and standard errors (Wald z, or t with `df_resid`)."""
    est = np.asarray(estimate, dtype=float)
    se = np.asarray(std_error, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = est / se
    alpha = 1.0 - spec.conf_level
    if df_resid is None:
        p = 2.0 * norm_sf(np.abs(stat))
        q = norm_ppf(1.0 - alpha / 2.0)
    else:
        p = 2.0 * t_sf(np.abs(stat), df_resid)
        q = t_ppf(1.0 - alpha / 2.0, df_resid)
    low, high = est - q * se, est + q * se
    with np.errstate(over="ignore"):
        table = pd.DataFrame(
            {
                "model": spec.name,
                "term": list(terms),
                "estimate": est,
                "std_error": se,
                "robust": bool(robust),
                "statistic": stat,
                "p_value": p,
                "conf_low": low,
                "conf_high": high,
                "exp_estimate": np.exp(est),
                "exp_conf_low": np.exp(low),
                "exp_conf_high": np.exp(high),
                "n_participants": int(n_participants),
                "n_events": int(n_events),
                "log_likelihood": np.nan if log_likelihood is None else float(log_likelihood),
                "converged": bool(converged),
                "message": message,
            }
        )
    return table[TIDY_COLUMNS]


class NotEstimable(Exception):
    """The data cannot estimate the model (one arm, no events, a singular design, a diverging
    fit...). Models raise it with the reason and the counts they know; the fitting layer
    (:func:`recurstudy.models.fit_spec`, :func:`quietly`) turns it into the failed row."""

    def __init__(self, reason: str, **counts: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counts = counts
        # tables still worth writing beside the failed row (e.g. the part that was estimable)
        self.extras: dict[str, pd.DataFrame] = {}

    def result(self, spec: ModelSpec) -> ModelResult:
        """The failed row (with any extras) this error stands for."""
        res = failed(spec, self.reason, **self.counts)
        res.extras = self.extras
        return res


def failed(spec: ModelSpec, message: str, **counts: int) -> ModelResult:
    """A result for a model that could not be estimated: one row, converged = False."""
    row: dict[str, Any] = {c: np.nan for c in TIDY_COLUMNS}
    row.update(
        model=spec.name,
        term=spec.intervention_term,
        robust=False,
        n_participants=counts.get("n_participants", 0),
        n_events=counts.get("n_events", 0),
        converged=False,
        message=message,
    )
    return ModelResult(pd.DataFrame([row], columns=TIDY_COLUMNS), converged=False, message=message)


# Set to "1" to make an unexpected exception inside a model's fit propagate instead of becoming
# the model's failed row ("0": never); unset, :data:`STRICT_FITS_DEFAULT` decides.  A study's run
# records the error and goes on with the other models; the test suite turns the default on in
# its own process (tests/conftest.py), so that a bug fails its test loudly, while the workflows
# it starts run as a study's run does.
STRICT_FITS_ENV = "RECURSTUDY_STRICT_FITS"
STRICT_FITS_DEFAULT = False


def strict_fits() -> bool:
    """Whether unexpected errors in a fit propagate (see :data:`STRICT_FITS_ENV`)."""
    import os

    value = os.environ.get(STRICT_FITS_ENV, "")
    if value == "":
        return STRICT_FITS_DEFAULT
    return value != "0"


def quietly(fit, spec: ModelSpec, data: dict) -> ModelResult:
    """Run ``fit(spec, **data)`` with numerical warnings silenced (convergence warnings are
    recorded inside the fits and become converged = False) and any unexpected error returned as
    a failed result (raised instead under :data:`STRICT_FITS_ENV`)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            return fit(spec, **data)
        except NotEstimable as exc:
            return exc.result(spec)
        except Exception as exc:  # a data problem we did not foresee is still a result
            if strict_fits():
                raise
            return failed(spec, f"{spec.kind} fit failed: {type(exc).__name__}: {exc}")


def design(formula: str, data: pd.DataFrame, *, intercept: bool) -> tuple[pd.DataFrame, list[str]]:
    """Design matrix from the formula's right-hand side with formulaic (rows with NA dropped).

    Returns the matrix (aligned to `data`'s index, so callers can subset the response) and its
    column names, e.g. ``Intercept``, ``arm[T.intervention]``, ``age``.
    """
    from formulaic import model_matrix

    from recurstudy.formula import check_formula

    rhs = formula.split("~", 1)[-1].strip() or "1"
    check_formula(rhs)  # untrusted text: only the documented grammar reaches formulaic
    # Always code with an intercept (treatment contrasts: arm[T.intervention]) and drop it for
    # models without one (Cox), as R's coxph does.
    mm = model_matrix(rhs, data, na_action="drop")
    term_slices, all_cols = mm.model_spec.term_slices, list(mm.columns)
    if not intercept and "Intercept" in mm.columns:
        mm = mm.drop(columns="Intercept")
    X = pd.DataFrame(np.asarray(mm, dtype=float), index=mm.index, columns=list(mm.columns))
    # The columns of each formula term (a factor has several), for tests by term (cox.zph):
    # kept with the matrix so that no caller builds the design a second time.
    X.attrs["terms"] = {
        str(term): [c for c in all_cols[sl] if c in X.columns] for term, sl in term_slices.items()
    }
    return X, list(X.columns)
