"""CSV outputs that are deterministic and safe to open in a spreadsheet.

A text cell that begins with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is run as a
formula by Excel, LibreOffice and Google Sheets ("CSV injection"). Every text cell the project
writes from config or data (claim statements, arm labels, messages, failing values) is therefore
prefixed with a single quote when it begins with one of them, as OWASP recommends; numbers are
written as numbers, and so is a text cell that is a plain negative number (``-0.5``, a failing
value in ``failure_cases.csv``): a spreadsheet reads it as that number and runs nothing. With
``headers=True`` (the report's tables, whose column names carry arm labels) the header cells
are made safe the same way.

Every CSV the package writes goes through :func:`spreadsheet_safe`: :func:`write_csv` (results),
the validation report (``failure_cases.csv``, ``excluded.csv``) and the report's
``reports/tables/*.csv``. ``recurstudy simulate`` writes input tables of its own making.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NEGATIVE_NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def formula_like(value: Any) -> bool:
    """Whether `value` is text that a spreadsheet would run as a formula."""
    return (
        isinstance(value, str)
        and value.startswith(FORMULA_START)
        and not _NEGATIVE_NUMBER.fullmatch(value)
    )


def _safe_text(value: Any) -> Any:
    return f"'{value}" if formula_like(value) else value


def spreadsheet_safe(df: pd.DataFrame, headers: bool = False) -> pd.DataFrame:
    """`df` with every text cell that a spreadsheet would run as a formula quoted ('=1+1); with
    `headers`, the column names too."""
    out = df
    for col in df.columns:
        s = df[col]
        if s.dtype != object and not isinstance(s.dtype, pd.StringDtype):
            continue
        text = s.map(formula_like).astype(bool)
        if text.any():
            if out is df:
                out = df.copy()
            out[col] = s.where(~text, "'" + s.astype(str))
    if headers and any(formula_like(c) for c in df.columns):
        out = out.rename(columns=_safe_text) if out is not df else df.rename(columns=_safe_text)
    return out


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """CSV with floats at 12 significant digits (stable across platforms), '\\n' line ends, text
    cells spreadsheet-safe."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    spreadsheet_safe(df).to_csv(path, index=False, lineterminator="\n", float_format="%.12g")
