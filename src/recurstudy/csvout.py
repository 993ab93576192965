"""CSV outputs that are deterministic and safe to open in a spreadsheet.

A text cell that begins with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is run as a
formula by Excel, LibreOffice and Google Sheets ("CSV injection"). Every text cell the project
writes from config or data (claim statements, arm labels, messages, failing values) is therefore
prefixed with a single quote when it begins with one of them, as OWASP recommends; numbers are
written as numbers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with every text cell that a spreadsheet would run as a formula quoted ('=1+1)."""
    out = df
    for col in df.columns:
        s = df[col]
        if s.dtype != object and not isinstance(s.dtype, pd.StringDtype):
            continue
        text = s.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_START))
        if text.any():
            if out is df:
                out = df.copy()
            out[col] = s.where(~text, "'" + s.astype(str))
    return out


def write_csv(df: pd.DataFrame, path: str | Path) -> None:
    """CSV with floats at 12 significant digits (stable across platforms), '\\n' line ends, text
    cells spreadsheet-safe."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    spreadsheet_safe(df).to_csv(path, index=False, lineterminator="\n", float_format="%.12g")
