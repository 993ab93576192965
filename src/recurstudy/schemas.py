"""pandera schemas of the data contract, built at run time from the config.

Arm labels and declared covariates come from the config, so the schemas are
``pandera.DataFrameSchema`` objects built by functions rather than static models. Each table is
checked in two passes, both lazy (every failure is collected):

1. :func:`input_schema` on the table as read (CSV: text): required columns present, no missing
   value where one is needed, every value parses as its type ("not a date (YYYY-MM-DD)",
   "not a number", ...).
2. :func:`rules_schema` on the typed table made by :func:`coerce_table` (unparsable values are
   missing there, so they are not reported twice): ranges, allowed labels, uniqueness and
   comparisons between columns of a row ("followup_end >= enrolled_on").

Checks across tables (pandera has none, issue #1143) validate a frame of the child table joined
with the per-participant bounds built at run time: :func:`link_frame` and :func:`link_schema`.

Check names either state the rule a failing value breaks (``age in [16, 100]``) or name what is
wrong with it (``missing value``, ``not a date (YYYY-MM-DD)``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa

from recurstudy.contract import FILLED_WHEN_ABSENT as _FILLED_WHEN_ABSENT
from recurstudy.contract import (
    ID,
    LINK_RULES,
    ROW_RULES,
    ColumnSpec,
    Compare,
    LinkRule,
    OneOf,
    Range,
    Trimmed,
    Unique,
    arm_labels,
    column_specs,
)
from recurstudy.io import is_text, positions

# Check names used outside the schemas (table-level failures).
CHECK_PRESENT = "column present"
CHECK_READABLE = "readable"
CHECK_DATE = "not a date (YYYY-MM-DD)"
CHECK_NUMBER = "not a number"
CHECK_INTEGER = "not an integer"
CHECK_BOOLEAN = "not a boolean (true/false, yes/no, 1/0)"
CHECK_KNOWN = "participant_id in participants"

_PARSE_CHECK = {
    "date": CHECK_DATE,
    "number": CHECK_NUMBER,
    "integer": CHECK_INTEGER,
    "boolean": CHECK_BOOLEAN,
}
_BOOLEAN_WORDS = {
    "true": True,
    "false": False,
    "t": True,
    "f": False,
    "yes": True,
    "no": False,
    "y": True,
    "n": False,
    "1": True,
    "0": False,
}
_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
# The first and last whole days of pandas' datetime64[ns] range.
_FIRST_DAY = pd.Timestamp.min.ceil("D")
_LAST_DAY = pd.Timestamp.max.floor("D")
_FIRST_DAY_NUMBER = (_FIRST_DAY - pd.Timestamp(0)).days
_LAST_DAY_NUMBER = (_LAST_DAY - pd.Timestamp(0)).days


# ------------------------------------------------------------------------------------ parsing


def parse_string(s: pd.Series) -> pd.Series:
    """Text values (as read: object or string dtype); non-text Parquet values become their
    string form."""
    if is_text(s):
        return s
    out = s.astype(str).astype(object)
    return out.where(s.notna(), np.nan)


def parse_date(s: pd.Series, text: Any = None) -> pd.Series:
    """Dates as ``datetime64[ns]`` at midnight; NaT where missing or not an ISO date.

    `text`: `s` as an Arrow string array (:func:`_arrow_strings`), if already made."""
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        # Parquet dates and coarse timestamps may lie outside the nanosecond range (1677-09-22
        # to 2262-04-11, e.g. a placeholder 9999-12-31): those are not dates here, like in a CSV
        inside = (s >= _FIRST_DAY) & (s <= _LAST_DAY)
        return s.where(inside).astype("datetime64[ns]").dt.normalize()
    if not is_text(s):
        return pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns]")
    fast = _parse_iso_dates_arrow(s, text)
    if fast is not None:
        return fast
    iso, other = _iso_mask(s)
    out = pd.to_datetime(s.where(iso), format="%Y-%m-%d", errors="coerce")
    if other.any():  # non-text objects (e.g. datetime.date from Parquet)
        conv = pd.to_datetime(s[other], errors="coerce", format="mixed")
        out = out.where(~other, conv)
    return out.astype("datetime64[ns]")


def _parse_iso_dates_arrow(s: pd.Series, text: Any = None) -> pd.Series | None:
    """:func:`parse_date` of a text column by Arrow, or None when pandas must decide.

    Measured at 1M participants: the regex mask plus ``pd.to_datetime(format="%Y-%m-%d")`` took
    0.95 s for the four date columns, Arrow's ISO cast a third of it. Arrow's cast fails on the
    whole column at the first impossible date (2025-02-30), and keeps dates beyond pandas'
    nanosecond range that pandas makes NaT: both cases go to pandas, which makes such values NaT
    one by one. Values that are not YYYY-MM-DD (same regex as :func:`_iso_mask`) are NaT.
    """
    import pyarrow as pa_
    import pyarrow.compute as pc

    arr = _arrow_strings(s) if text is None else text
    if arr is None:
        return None
    try:
        iso = pc.fill_null(pc.match_substring_regex(arr, f"^{_ISO_DATE}$"), False)
        days = pc.cast(pc.if_else(iso, arr, pa_.scalar(None, arr.type)), pa_.date32())
    except (pa_.ArrowException, TypeError, ValueError):
        return None
    low, high = pc.min_max(days.view(pa_.int32())).values()  # days since 1970-01-01
    if low.is_valid and (low.as_py() < _FIRST_DAY_NUMBER or high.as_py() > _LAST_DAY_NUMBER):
        return None
    values = days.cast(pa_.timestamp("ns")).to_numpy(zero_copy_only=False)
    return pd.Series(values.astype("datetime64[ns]"), index=s.index)


def _iso_mask(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(text that looks like YYYY-MM-DD, non-missing values that are not text)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:  # Arrow's regex engine is much faster than a Python-level regex per value
        arr = pa.array(s.to_numpy(), type=pa.string(), from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError):  # values that are not all text
        is_text = s.map(lambda v: isinstance(v, str)).astype(bool)
        iso = s.map(lambda v: isinstance(v, str) and re.fullmatch(_ISO_DATE, v) is not None)
        other = ~is_text & s.notna()
        return iso.astype(bool), other
    iso = pc.fill_null(pc.match_substring_regex(arr, f"^{_ISO_DATE}$"), False)
    iso = pd.Series(iso.to_numpy(zero_copy_only=False), index=s.index)
    return iso, pd.Series(False, index=s.index)


def parse_number(s: pd.Series, text: Any = None) -> pd.Series:
    """Finite numbers as float64; NaN where missing or not a number (`text`: as for
    :func:`parse_date`)."""
    if pd.api.types.is_bool_dtype(s.dtype):
        out = s.astype("float64")
    elif pd.api.types.is_numeric_dtype(s.dtype):
        out = pd.to_numeric(s, errors="coerce").astype("float64")
    elif is_text(s):
        out = _parse_plain_decimals_arrow(s, text)
        if out is None:
            out = pd.to_numeric(s, errors="coerce").astype("float64")
    else:
        return pd.Series(np.nan, index=s.index, dtype="float64")
    return out.where(np.isfinite(out.to_numpy(dtype="float64", na_value=np.nan)), np.nan)


_PLAIN_DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"


def _parse_plain_decimals_arrow(s: pd.Series, text: Any = None) -> pd.Series | None:
    """Text numbers as float64 by Arrow's cast when every value is a plain decimal (``-12``,
    ``3.75``) of at most 15 digits, else None (pandas decides, as for ``1e3``, `` 5``, ``inf``).

    Measured at 1M participants: ``pd.to_numeric`` on the text columns took 1.4 s, this a
    fifth. Up to 15 digits both give the same double: the digits form an integer below 2**53
    and one division by an exact power of ten rounds once, which is what pandas'
    ``precise_xstrtod`` does, and Arrow rounds correctly. Negative zeros are left to pandas,
    whose sign depends on the other values of the column (an all-integer column gives 0.0).
    """
    import pyarrow as pa_
    import pyarrow.compute as pc

    arr = _arrow_strings(s) if text is None else text
    if arr is None or arr.null_count == len(arr):
        return None
    plain = pc.match_substring_regex(arr, _PLAIN_DECIMAL)
    if not pc.all(plain).as_py():  # nulls are skipped
        return None
    digits = pc.subtract(
        pc.utf8_length(arr),
        pc.add(
            pc.cast(pc.starts_with(arr, "-"), pa_.int32()),
            pc.cast(pc.match_substring(arr, "."), pa_.int32()),
        ),
    )
    if pc.max(digits).as_py() > 15:
        return None
    try:
        values = pc.cast(arr, pa_.float64())
    except (pa_.ArrowException, ValueError):  # pragma: no cover - plain decimals always cast
        return None
    negative_zero = pc.and_(pc.equal(values, 0.0), pc.starts_with(arr, "-"))
    if pc.any(negative_zero).as_py():
        return None
    return pd.Series(values.to_numpy(zero_copy_only=False), index=s.index, dtype="float64")


def parse_integer(s: pd.Series, text: Any = None) -> pd.Series:
    """Whole numbers as nullable Int64; <NA> where missing or not a whole number."""
    num = parse_number(s, text)
    whole = num.where(num == np.round(num)).where(num.abs() < 2**53)
    return whole.astype("Int64")


def parse_boolean(s: pd.Series) -> pd.Series:
    """Booleans (nullable ``boolean``): true/false, t/f, yes/no, y/n, 1/0, any case."""
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.astype("boolean")
    if pd.api.types.is_numeric_dtype(s.dtype):
        return s.map({1: True, 0: False}).astype("boolean")
    if not is_text(s):
        return pd.Series(pd.NA, index=s.index, dtype="boolean")
    return (
        s.astype(str).str.strip().str.lower().map(_BOOLEAN_WORDS).where(s.notna()).astype("boolean")
    )


PARSERS: dict[str, Callable[..., pd.Series]] = {
    "string": parse_string,
    "date": parse_date,
    "number": parse_number,
    "integer": parse_integer,
    "boolean": parse_boolean,
}


# ------------------------------------------------------------------------------ pass 1: input


def _arrow_strings(s: pd.Series) -> Any:
    """A text column as an Arrow string array (``large_string`` from a :data:`~recurstudy.io.TEXT`
    column, which is Arrow already and not copied; else ``string``), NaN and None null; None when
    a value is not text."""
    import pyarrow as pa_

    if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
        arr = pa_.array(s.array)
        return arr.combine_chunks() if isinstance(arr, pa_.ChunkedArray) else arr
    try:
        return pa_.array(s.to_numpy(), type=pa_.string(), from_pandas=True)
    except (pa_.ArrowException, TypeError, ValueError):
        return None


def _parse_check(spec: ColumnSpec, cache: dict[str, pd.Series] | None) -> pa.Check:
    parser = PARSERS[spec.kind]
    takes_text = spec.kind in ("date", "number", "integer")

    def parses(s: pd.Series) -> pd.Series:
        # A text column is made an Arrow array once: the parser's fast path and the missing
        # mask share it (pd.isna on object columns took 0.35 s for the 8 parsed columns at 1M).
        text = _arrow_strings(s) if takes_text and is_text(s) else None
        parsed = parser(s) if text is None else parser(s, text)
        if cache is not None:
            cache[spec.name] = parsed
        if text is None:
            return parsed.notna() | s.isna()
        missing = text.is_null().to_numpy(zero_copy_only=False)
        return parsed.notna() | pd.Series(missing, index=s.index)

    return pa.Check(parses, name=_PARSE_CHECK[spec.kind], ignore_na=False)


def input_schema(
    table: str, config: Mapping[str, Any], cache: dict[str, pd.Series] | None = None
) -> pa.DataFrameSchema:
    """Schema of `table` as read: columns present, values present, values parse as their type.

    If `cache` is given, the parse checks store each parsed column in it, so that
    :func:`coerce_table` need not parse a second time.
    """
    columns = {}
    for spec in column_specs(table, config).values():
        checks = []
        if spec.not_missing:
            checks.append(pa.Check(lambda s: s.notna(), name=spec.missing_check, ignore_na=False))
        if spec.kind != "string":
            checks.append(_parse_check(spec, cache))
        columns[spec.name] = pa.Column(
            None, checks=checks, nullable=True, required=spec.required, coerce=False
        )
    return pa.DataFrameSchema(columns, strict=False, name=f"{table} (input)")


def coerce_table(
    raw: pd.DataFrame,
    table: str,
    config: Mapping[str, Any],
    cache: Mapping[str, pd.Series] | None = None,
) -> pd.DataFrame:
    """The typed table: contract columns parsed (unparsable values missing), others kept as read.

    A required column that is absent is added as all-missing so the rule checks can run (its
    absence is reported by the input schema).
    """
    out = raw.copy()
    for spec in column_specs(table, config).values():
        if spec.name in out.columns:
            parsed = (cache or {}).get(spec.name)
            out[spec.name] = PARSERS[spec.kind](raw[spec.name]) if parsed is None else parsed
        elif spec.required or spec.name in _FILLED_WHEN_ABSENT.get(table, ()):
            empty = pd.Series(np.nan, index=out.index, dtype=object)
            out[spec.name] = PARSERS[spec.kind](empty)
    if table == "participants" and "end_reason" in out.columns:
        out["end_reason"] = map_end_reasons(out["end_reason"], config)
    return out


def map_end_reasons(values: pd.Series, config: Mapping[str, Any]) -> pd.Series:
    """`values` with the study's own end-reason labels (config ``end_reason_labels``) replaced by
    the contract's values; other values are kept as they are, so that an unmapped unknown label
    still fails the ``end_reason in {...}`` check (reported with its raw value and row)."""
    labels = {str(k): str(v) for k, v in (config.get("end_reason_labels") or {}).items()}
    if not labels:
        return values
    mapped = values.map(lambda v: labels.get(v, v) if isinstance(v, str) else v)
    return mapped.astype(object)


# ------------------------------------------------------------------------------ pass 2: rules


def _between(low: float | None, high: float | None) -> Callable[[pd.Series], pd.Series]:
    def check(s: pd.Series) -> pd.Series:
        ok = pd.Series(True, index=s.index)
        if low is not None:
            ok &= s >= low
        if high is not None:
            ok &= s <= high
        return ok

    return check


def _fmt(x: float) -> str:
    return f"{x:g}"


def _range_check(name: str, low: float | None, high: float | None) -> pa.Check:
    if low is not None and high is not None:
        label = f"{name} in [{_fmt(low)}, {_fmt(high)}]"
    elif low is not None:
        label = f"{name} >= {_fmt(low)}"
    else:
        label = f"{name} <= {_fmt(high)}"
    return pa.Check(_between(low, high), name=label)


def _in_check(name: str, allowed: tuple[str, ...]) -> pa.Check:
    values = list(allowed)
    return pa.Check(lambda s: s.isin(values), name=f"{name} in {{{', '.join(allowed)}}}")


def _aligned(col: pd.Series, index: pd.Index) -> pd.Series:
    return col if col.index.equals(index) else col.reindex(index)


def _compare_check(frame: pd.DataFrame, col: str, op: str, other: str) -> pa.Check:
    """`col op other` within a row of `frame`; rows where either side is missing pass."""
    ops = {
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        "<": lambda a, b: a < b,
    }
    fn = ops[op]

    def check(s: pd.Series) -> pd.Series:
        ref = _aligned(frame[other], s.index)
        return fn(s, ref) | s.isna() | ref.isna()

    return pa.Check(check, name=f"{col} {op} {other}", ignore_na=False)


def _unique_check(frame: pd.DataFrame, keys: list[str], col: str) -> pa.Check:
    """No two rows share the values of `keys`; rows with a missing key pass."""

    def check(s: pd.Series) -> pd.Series:
        sub = frame[keys] if frame.index.equals(s.index) else frame.loc[s.index, keys]
        repeated = _repeats_in_order(sub)
        if repeated is not None:
            return pd.Series(~repeated, index=sub.index)
        return ~sub.duplicated(keep=False) | sub.isna().any(axis=1)

    label = f"{keys[0]} unique" if len(keys) == 1 else f"({', '.join(keys)}) unique"
    return pa.Check(check, name=label, ignore_na=False)


def _repeats_in_order(sub: pd.DataFrame) -> np.ndarray | None:
    """``sub.duplicated(keep=False)`` for rows already sorted by their keys (text in Arrow's
    byte order, dates), none missing: repeats are then neighbours, found by comparing each row
    with the next. None otherwise (pandas hashes the keys). At 1M participants hashing the ids
    and (id, onset) pairs took 0.6 s, this 0.15 s: the input files are usually sorted.
    """
    import pyarrow as pa_
    import pyarrow.compute as pc

    n = len(sub)
    if n < 2:
        return None
    before = np.zeros(n - 1, dtype=bool)  # row i < row i + 1 on the keys so far
    tie = np.ones(n - 1, dtype=bool)  # row i == row i + 1 on the keys so far
    for col in sub.columns:
        values = sub[col]
        if is_text(values):
            arr = _arrow_strings(values)
            if arr is None or arr.null_count:
                return None
            a, b = arr.slice(0, n - 1), arr.slice(1)
            try:
                less = pc.less(a, b).to_numpy(zero_copy_only=False)
                equal = pc.equal(a, b).to_numpy(zero_copy_only=False)
            except pa_.ArrowException:  # pragma: no cover - strings always compare
                return None
        elif values.dtype == np.dtype("datetime64[ns]"):
            v = values.to_numpy()
            if np.isnat(v).any():
                return None
            less, equal = v[:-1] < v[1:], v[:-1] == v[1:]
        else:
            return None
        before |= tie & less
        tie &= equal
    if not (before | tie).all():
        return None
    repeated = np.zeros(n, dtype=bool)
    repeated[1:] |= tie
    repeated[:-1] |= tie
    return repeated


def _arrow_text(s: pd.Series) -> Any:
    """`s` as an Arrow string array (missing values null); non-text values by their ``str``."""
    import pyarrow as pa_

    if is_text(s):
        arr = _arrow_strings(s)
        if arr is not None:
            return arr
    try:  # text columns convert without a Python-level loop
        return pa_.array(s.to_numpy(dtype=object), type=pa_.string(), from_pandas=True)
    except (pa_.ArrowException, TypeError, ValueError):
        text = s.astype(object).map(str, na_action="ignore")
        return pa_.array(text.to_numpy(dtype=object), type=pa_.string(), from_pandas=True)


def _folded_unique_check(col: str) -> pa.Check:
    """Values equal once case and surrounding whitespace are ignored must be spelled the same:
    every row of a group with two or more spellings fails (missing values pass)."""

    def check(s: pd.Series) -> pd.Series:
        import pyarrow.compute as pc

        ok = pd.Series(True, index=s.index)
        if not s.notna().any():  # e.g. an absent column added as all-missing
            return ok
        arr = _arrow_text(s)
        key = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
        # fast path (one hash): every folded key distinct, so no key has two spellings
        if len(pc.unique(key.drop_null())) == len(key) - key.null_count:
            return ok
        text = pd.Series(arr.to_numpy(zero_copy_only=False), index=s.index)
        folded = pd.Series(key.to_numpy(zero_copy_only=False), index=s.index)
        twin = folded.duplicated(keep=False) & folded.notna()
        spellings = text[twin].groupby(folded[twin]).transform("nunique")
        ok[twin] = (spellings <= 1).to_numpy()
        return ok

    return pa.Check(
        check, name=f"{col} unique ignoring case and surrounding whitespace", ignore_na=False
    )


def _trimmed_check(col: str) -> pa.Check:
    """No surrounding whitespace (Unicode: no-break spaces too) and no control character."""

    def check(s: pd.Series) -> pd.Series:
        import pyarrow.compute as pc

        if not s.notna().any():
            return pd.Series(True, index=s.index)
        arr = _arrow_text(s)
        trimmed = pc.equal(pc.utf8_trim_whitespace(arr), arr)
        clean = pc.invert(pc.match_substring_regex(arr, r"[\x00-\x1f\x7f]"))
        good = pc.fill_null(pc.and_(trimmed, clean), True)
        return pd.Series(good.to_numpy(zero_copy_only=False), index=s.index)

    return pa.Check(
        check, name=f"{col} without surrounding whitespace or control characters", ignore_na=False
    )


def _rule_check(rule: object, typed: pd.DataFrame, config: Mapping[str, Any]) -> pa.Check:
    """The pandera check of one row rule declared in :data:`recurstudy.contract.ROW_RULES`."""
    if isinstance(rule, Range):
        return _range_check(rule.column, rule.low, rule.high)
    if isinstance(rule, OneOf):
        allowed = arm_labels(config) if rule.allowed is None else rule.allowed
        return _in_check(rule.column, tuple(allowed))
    if isinstance(rule, Compare):
        return _compare_check(typed, rule.column, rule.op, rule.other)
    if isinstance(rule, Unique) and rule.fold:
        return _folded_unique_check(rule.column)
    if isinstance(rule, Unique):
        return _unique_check(typed, list(rule.keys), rule.column)
    if isinstance(rule, Trimmed):
        return _trimmed_check(rule.column)
    raise TypeError(f"unknown row rule {rule!r}")


def rules_schema(table: str, config: Mapping[str, Any], typed: pd.DataFrame) -> pa.DataFrameSchema:
    """Schema of the typed `table` (from :func:`coerce_table`): ranges, labels, row rules.

    Comparisons between columns and uniqueness of key pairs are attached to the column they
    are reported on and read the other columns of `typed`, the frame to validate.
    """
    if table not in ROW_RULES:
        raise ValueError(f"unknown table {table!r}")
    checks: dict[str, list[pa.Check]] = {}
    for rule in ROW_RULES[table]:
        if rule.column in typed.columns:
            checks.setdefault(rule.column, []).append(_rule_check(rule, typed, config))
    columns = {
        col: pa.Column(None, checks=cs, nullable=True, required=False, coerce=False)
        for col, cs in checks.items()
    }
    return pa.DataFrameSchema(columns, strict=False, name=f"{table} (rules)")


# ------------------------------------------------------------------------ pass 3: across tables


def link_frame(
    child: pd.DataFrame,
    table: str,
    participants: pd.DataFrame,
    raw: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """`child`'s id and date (and the end of its span, if the link rule has one) with its
    participant's enrolment and follow-up end (same index).

    Adds ``_known`` (the id is in the participants table) and ``_participant`` (the row
    position of its participant in `participants`, -1 if unknown); for a repeated participant
    id the first row is used (the repeat is reported by the participants' rules). With `raw`
    (the table as read), ``_end_given`` marks rows whose end of span was given, even if it does
    not parse (that is reported by the parse check, not again here).
    """
    rule = LINK_RULES[table]
    bounds = pd.DataFrame(
        {
            ID: participants[ID],
            "enrolled_on": participants["enrolled_on"],
            "followup_end": participants["followup_end"],
            "_row": np.arange(len(participants)),
        },
        index=participants.index,
    )
    bounds = bounds[bounds[ID].notna()].drop_duplicates(ID)
    pos = positions(bounds[ID], child[ID])  # one hash lookup per row; -1: unknown
    known = pos >= 0
    take = np.where(known, pos, 0)
    out = pd.DataFrame({ID: child[ID], rule.date: child[rule.date]}, index=child.index)
    # the participant's row position (-1: unknown), so that no later step hashes the ids again
    rows = bounds["_row"].to_numpy()
    out["_participant"] = np.where(known, rows[take] if len(rows) else -1, -1)
    if rule.under_way is not None:
        if rule.under_way in child.columns:
            out[rule.under_way] = child[rule.under_way]
        else:
            out[rule.under_way] = pd.Series(pd.NaT, index=child.index, dtype="datetime64[ns]")
        given = raw[rule.under_way] if raw is not None and rule.under_way in raw else None
        out["_end_given"] = (
            given.notna().to_numpy() if given is not None else out[rule.under_way].notna()
        )
    out["_known"] = known
    for col in ("enrolled_on", "followup_end"):
        values = bounds[col].to_numpy(dtype="datetime64[ns]")
        picked = values[take] if len(values) else np.full(len(take), np.datetime64("NaT", "ns"))
        out[col] = np.where(known, picked, np.datetime64("NaT", "ns"))
    return out


def _under_way_check(linked: pd.DataFrame, rule: LinkRule) -> pa.Check:
    """``date > enrolled_on or <under_way> > enrolled_on``: the row starts after enrolment or is
    still under way at enrolment. A row starting on or before enrolment without an end (an
    unresolved episode) fails: it would leave the participant no time at risk, and is more
    likely a wrong date. Rows with a missing date or enrolment, or an end that does not parse,
    pass (reported by their own checks)."""
    end = rule.under_way

    def check(s: pd.Series) -> pd.Series:
        enrolled = _aligned(linked["enrolled_on"], s.index)
        until = _aligned(linked[end], s.index)
        unparsed = until.isna() & _aligned(linked["_end_given"], s.index)
        return (s > enrolled) | (until > enrolled) | unparsed | s.isna() | enrolled.isna()

    name = f"{rule.date} {rule.low_op} enrolled_on or {end} {rule.low_op} enrolled_on"
    return pa.Check(check, name=name, ignore_na=False)


def link_schema(table: str, linked: pd.DataFrame) -> pa.DataFrameSchema:
    """Schema of :func:`link_frame`'s output: known participant, date within follow-up (or, for
    a rule with ``under_way``, a span still under way at enrolment)."""
    rule = LINK_RULES[table]
    known = pa.Check(lambda s: _aligned(linked["_known"], s.index), name=CHECK_KNOWN)
    if rule.under_way is not None:
        low = _under_way_check(linked, rule)
    else:
        low = _compare_check(linked, rule.date, rule.low_op, "enrolled_on")
    return pa.DataFrameSchema(
        {
            ID: pa.Column(None, checks=[known], nullable=True, coerce=False),
            rule.date: pa.Column(
                None,
                checks=[low, _compare_check(linked, rule.date, rule.high_op, "followup_end")],
                nullable=True,
                coerce=False,
            ),
        },
        strict=False,
        name=f"{table} (across tables)",
    )


# ----------------------------------------------------------------------------- failure cases


def failure_frame(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    """Validate lazily; the failures as columns ``index`` (-1: whole table), ``column``, ``check``.

    pandera's ``column_in_dataframe`` becomes ``column present`` on the missing column.
    """
    try:
        schema.validate(frame, lazy=True, inplace=True)
    except pa.errors.SchemaErrors as exc:
        fc = exc.failure_cases
    else:
        return pd.DataFrame(
            {
                "index": pd.Series(dtype="int64"),
                "column": pd.Series(dtype=object),
                "check": pd.Series(dtype=object),
            }
        )
    check = fc["check"].astype(str)
    column = fc["column"].astype(object)
    missing_col = check == "column_in_dataframe"
    column = column.where(~missing_col, fc["failure_case"])
    check = check.where(~missing_col, CHECK_PRESENT)
    index = pd.to_numeric(fc["index"], errors="coerce").fillna(-1).astype("int64")
    out = pd.DataFrame(
        {"index": index.to_numpy(), "column": column.to_numpy(), "check": check.to_numpy()}
    )
    return out.drop_duplicates(ignore_index=True)
