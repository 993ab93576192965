"""Robust reading of the input tables (CSV or Parquet).

CSV files are read with every column as text, so that parsing (dates, numbers) is done and
reported by the validation schemas rather than by pandas. Each row keeps the line of the file it
came from in the column ``_row`` (header = line 1, first data row = line 2; a quoted field that
spans several lines advances the count; blank lines are skipped but counted). Parquet rows get
their 1-based row number.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recurstudy.contract import NON_EMPTY_TABLES

ROW_COLUMN = "_row"

# Text columns are Arrow-backed pandas strings with NaN for missing (pandas 3's default ``str``
# dtype). Python string objects were the largest cost left at 1M participants (3.6M ids): making
# them when reading a CSV or Parquet file took 0.7 s per table read, converting them back to
# Arrow for parsing, hashing and writing as long again; Arrow-backed columns are read, parsed and
# written without a copy. Code that takes a table accepts either (``is_text``).
TEXT = pd.StringDtype("pyarrow", na_value=np.nan)
CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")

_WHITESPACE = frozenset(b" \t\r\n\x0b\x0c")


class InputError(Exception):
    """An input table that cannot be read; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def read_table(path: str | Path, table: str) -> pd.DataFrame:
    """Read one input table (CSV or Parquet, by extension) with a ``_row`` source-line column.

    CSV columns are all text (:data:`TEXT`) with empty fields as missing values (NaN);
    Parquet columns keep their stored types (dates as ``datetime64``), empty strings become
    missing. Raises :class:`InputError` for a missing or empty file, a header without data rows
    (participants only), a file that is not comma-delimited, bytes that are not UTF-8, a
    malformed CSV or an unreadable Parquet file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, f"file not found (the {table} table is required by the config)")
    if path.is_dir():
        raise InputError(path, "is a directory, not a CSV or Parquet file")
    kind = not_regular(path)
    if kind:
        # checked with stat before any open: opening a FIFO blocks, a device never ends
        raise InputError(
            path, f"is {kind}, not a regular file; data.{table} must name a CSV or Parquet file"
        )
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        df = _read_csv(path)
    elif suffix in PARQUET_SUFFIXES:
        df = _read_parquet(path)
    else:
        raise InputError(
            path,
            f"unknown file type {path.suffix!r}; recurstudy reads .csv (comma-separated, UTF-8) "
            "or .parquet/.pq files",
        )
    if len(df) == 0 and table in NON_EMPTY_TABLES:
        raise InputError(
            path, f"has a header but no data rows; the {table} table must not be empty"
        )
    return df


def not_regular(path: str | Path) -> str:
    """What `path` is when it is not a regular file (after symlinks): ``a FIFO (named pipe)``,
    ``a device``, ``a socket``; empty for a regular file. Uses stat only, never opens."""
    import os
    import stat

    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "neither a file nor a directory"


def is_text(s: pd.Series | pd.Index) -> bool:
    """A column of text: ``object`` (strings, NaN missing) or a pandas string dtype."""
    return s.dtype == object or isinstance(s.dtype, pd.StringDtype)


def text_series(arr: Any, index: pd.Index | None = None) -> pd.Series:
    """An Arrow string array (or chunked array) as a :data:`TEXT` series, without a copy of the
    characters (nulls become missing)."""
    return pd.Series(TEXT.__from_arrow__(arr), index=index, copy=False)


def _arrow_text(s: pd.Series) -> Any:
    """A :data:`TEXT` column's Arrow array (one chunk), or None for any other column."""
    if not (isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"):
        return None
    import pyarrow as pa

    arr = pa.array(s.array)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def positions(keys: pd.Series, values: pd.Series) -> np.ndarray:
    """For each of `values`, the position of the equal value in `keys` (unique, none missing),
    -1 where there is none: ``pd.Index(keys).get_indexer(values)``. Two :data:`TEXT` columns are
    matched by Arrow's hash lookup; pandas makes a Python object of every string first (0.8 s
    for 2.6M episodes against 1M participant ids)."""
    k, v = _arrow_text(keys), _arrow_text(values)
    if k is None or v is None:
        return pd.Index(keys).get_indexer(values)
    import pyarrow.compute as pc

    found = pc.index_in(v, value_set=k)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)


def factorize(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """``pd.factorize(values)``: codes in first-seen order (-1 where missing) and the distinct
    values. A :data:`TEXT` column is encoded by Arrow (pandas took twice as long on 3.6M ids)."""
    arr = _arrow_text(values)
    if arr is None:
        codes, uniques = pd.factorize(values)
        return codes, pd.Index(uniques)
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(arr)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, pd.Index(text_series(encoded.dictionary))


def is_ascending(values: pd.Series) -> bool:
    """``values.is_monotonic_increasing`` (False when a value is missing), by Arrow for a
    :data:`TEXT` column (pandas makes every string a Python object first)."""
    arr = _arrow_text(values)
    if arr is None:
        return bool(values.is_monotonic_increasing)
    if arr.null_count:
        return False
    import pyarrow.compute as pc

    n = len(arr)
    return n < 2 or bool(pc.all(pc.less_equal(arr.slice(0, n - 1), arr.slice(1))).as_py())


def _text_type(arrow_type: Any) -> Any:
    import pyarrow as pa

    return TEXT if arrow_type in (pa.string(), pa.large_string()) else None


def read_parquet(path: str | Path) -> pd.DataFrame:
    """A Parquet file the workflow wrote (validated tables, analysis datasets), text columns as
    :data:`TEXT` (``pd.read_parquet`` makes a Python object of every string)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pandas(types_mapper=_text_type)


# --------------------------------------------------------------------------------------- CSV


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from None
    if len(data) == 0:
        raise InputError(path, "is empty (0 bytes); expected a header row and data rows")
    _check_not_binary(path, data)
    _check_utf8(path, data)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if not data.strip():
        raise InputError(path, "contains only blank lines; expected a header row and data rows")

    header = _first_record(data)
    _check_header(path, header)

    fast = _read_csv_arrow(data, header)
    if fast is not None:
        return fast
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            df = pd.read_csv(
                io.BytesIO(data),
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                index_col=False,
                encoding="utf-8",
                skip_blank_lines=True,
            )
        except pd.errors.ParserError as exc:
            raise InputError(path, _parser_problem(exc, len(header))) from None
        except (ValueError, UnicodeDecodeError) as exc:  # pragma: no cover - defensive
            raise InputError(path, f"cannot be parsed as CSV ({_clean(exc)})") from None
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning):
            raise InputError(
                path,
                f"a data row has more fields than the header ({len(header)} columns); "
                "check the delimiter and quoting",
            )

    names = [str(c).strip() for c in df.columns]
    lines = _record_lines(data, len(df))
    # one new frame rather than a column at a time (a file may have thousands of columns)
    columns = {}
    for i, name in enumerate(names):
        values = df.iloc[:, i].astype(object)
        columns[name] = values.where(values != "", np.nan).astype(TEXT)
    columns[ROW_COLUMN] = pd.Series(lines, index=df.index)
    return pd.DataFrame(columns, index=df.index)


def _read_csv_arrow(data: bytes, header: list[str]) -> pd.DataFrame | None:
    """The frame :func:`_read_csv`'s pandas path gives, read by Arrow's CSV reader; None when
    Arrow cannot read the file or might read it differently, and the pandas path decides.

    Measured at 1M participants (2.6M episodes, 2 cores): pandas' C parser with ``dtype=str``
    plus the ``'' -> NaN`` pass took 3.7 s for the two tables, Arrow (multi-threaded, all
    columns ``string``, empty fields null) 1.5 s. Arrow is used only when its reading provably
    matches pandas': every column text, the header as the csv module reads it, and as many
    records as the line count finds (so no whitespace-only line was kept as a row, and no row
    with missing fields was padded). Anything else, including every Arrow error (a row with more
    or fewer fields, an unclosed quote), falls back to pandas, whose messages the user sees.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return None  # a lone CR: the two parsers split lines apart differently
    scan = _Scan(data)
    if scan.quotes is not None and not scan.quotes_enclose_fields():
        return None
    try:
        table = pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(use_threads=True),
            # a line break inside a quoted value needs Arrow's slower serial chunking; only when
            # the file has one (a quoted file without is chunked at every line end, as Arrow's
            # parallel reader does)
            parse_options=pacsv.ParseOptions(newlines_in_values=scan.newline_in_quotes),
            convert_options=pacsv.ConvertOptions(
                # large_string: the type pandas' Arrow-backed strings hold (no cast)
                column_types=dict.fromkeys(header, pa.large_string()),
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        return None
    if table.column_names != header or any(t != pa.large_string() for t in table.schema.types):
        return None
    n = table.num_rows
    if not scan.newline_in_quotes and len(header) > 1 and scan.n_lines == n + 1:
        # Every line is a record (no quoted line break, so no record spans lines; a blank or
        # whitespace-only line would be a line that is not one, since Arrow skips empty lines
        # and rejects a one-field line under a wider header): the header is line 1, rows are
        # lines 2... Saves locating the record starts (0.35 s per table at 1M).
        lines = np.arange(2, n + 2, dtype=np.int64)
    else:
        lines = scan.record_lines()
        if lines is None or len(lines) != n:
            return None
    index = pd.RangeIndex(n)
    columns = {
        name.strip(): text_series(col, index)
        for name, col in zip(header, table.columns, strict=True)
    }
    columns[ROW_COLUMN] = pd.Series(lines, index=index)
    return pd.DataFrame(columns, index=index)


class _Scan:
    """Where a CSV file's quotes and line breaks are, found once for the checks that decide how
    it is read and for the line number of each record.

    Measured on cgd replicated to 630k participants (75 MB, every field quoted): the quote
    check and the record starts each located the quotes again (0.9 + 0.7 s); one scan, and
    Arrow's parallel reader when no quoted value holds a line break, read the file in about
    half the time.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.arr = np.frombuffer(data, dtype=np.uint8)
        self.newlines = np.flatnonzero(self.arr == ord("\n"))
        # lines as the line count sees them: a last line without its line break counts
        self.n_lines = len(self.newlines) + (not data.endswith(b"\n"))
        self.quotes: np.ndarray | None = None
        # each line break: is it inside a quoted value (an odd number of quotes before it)?
        self.quoted_newline = np.zeros(len(self.newlines), dtype=bool)
        if b'"' in data:
            self.quotes = np.flatnonzero(self.arr == ord('"'))
            self.quoted_newline = (np.searchsorted(self.quotes, self.newlines) % 2) == 1
        self.newline_in_quotes = bool(self.quoted_newline.any())

    def quotes_enclose_fields(self) -> bool:
        """Every quote character opens a field (after a comma, a line break or at the start),
        closes one (before a comma, a line break or the end), or is doubled inside a quoted
        field, and the last quoted field is closed: RFC 4180 quoting, read alike by Arrow and
        pandas. (Arrow accepts an unclosed quote at the end of the file, and the two differ on a
        quote inside an unquoted field; such files take the pandas path.)"""
        arr, quotes = self.arr, self.quotes
        if quotes is None:
            return True
        if len(quotes) % 2:
            return False
        opens, closes = quotes[0::2], quotes[1::2]
        before = _OPEN_AFTER[arr[np.maximum(opens - 1, 0)]]
        open_ok = before | (opens == 0)
        after = _CLOSE_BEFORE[arr[np.minimum(closes + 1, len(arr) - 1)]]
        close_ok = after | (closes == len(arr) - 1)
        return bool(open_ok.all() and close_ok.all())

    def record_lines(self) -> np.ndarray | None:
        """Line number (1-based) at which each data record (after the header) starts.

        A line break ends a record when it is not inside a quoted value (RFC 4180 quoting,
        where an escaped quote is doubled). Blank (whitespace-only) records are skipped, as
        pandas does. None when the data holds no record at all.
        """
        data, arr, newlines = self.data, self.arr, self.newlines
        ends = newlines[~self.quoted_newline]
        starts = np.concatenate(([0], ends + 1))
        stops = np.concatenate((ends, [len(data)]))
        keep = starts < len(data)
        starts, stops = starts[keep], stops[keep]
        # A record is blank when it holds only whitespace; such records must start with
        # whitespace, so only those few candidates are inspected one by one.
        blank = stops <= starts
        first_ws = _IS_WHITESPACE[arr[np.minimum(starts, len(data) - 1)]] & ~blank
        for i in np.flatnonzero(first_ws):
            if not data[starts[i] : stops[i]].strip():
                blank[i] = True
        starts = starts[~blank]
        if len(starts) == 0:
            return None
        lines = np.searchsorted(newlines, starts[1:]) + 1
        return lines.astype(np.int64)


def _byte_table(allowed: bytes | frozenset[int]) -> np.ndarray:
    """A lookup table over byte values: True for `allowed` (faster than np.isin per byte)."""
    table = np.zeros(256, dtype=bool)
    table[list(allowed)] = True
    return table


_OPEN_AFTER = _byte_table(b',\n"')
_CLOSE_BEFORE = _byte_table(b',\r\n"')
_IS_WHITESPACE = _byte_table(_WHITESPACE)


def _clean(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _parser_problem(exc: Exception, n_header: int) -> str:
    """pandas' tokenizer error as a sentence naming the line and what to check."""
    text = _clean(exc)
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if found:
        expected, line, saw = found.groups()
        return (
            f"line {line} has {saw} fields but the header has {n_header or expected} columns "
            "(a data row has more fields than the header); check the delimiter and quoting "
            "(a value containing a comma must be quoted)"
        )
    return f"is not a well-formed CSV file ({text}); check the quoting (an unclosed '\"'?)"


# Leading bytes of file types that are sometimes saved under a .csv name, and what to say.
_MAGIC = (
    (codecs.BOM_UTF32_LE, "is UTF-32 encoded (byte-order mark FF FE 00 00)"),
    (codecs.BOM_UTF32_BE, "is UTF-32 encoded (byte-order mark 00 00 FE FF)"),
    (codecs.BOM_UTF16_LE, "is UTF-16 encoded (byte-order mark FF FE, e.g. Excel 'Unicode text')"),
    (codecs.BOM_UTF16_BE, "is UTF-16 encoded (byte-order mark FE FF)"),
    (b"\x1f\x8b", "is gzip-compressed, not a plain CSV file; decompress it (gunzip) first"),
    (
        b"PK\x03\x04",
        "is a ZIP archive (an Excel .xlsx workbook or a zipped file), not a CSV file; export the "
        "sheet as 'CSV UTF-8 (comma delimited)'",
    ),
    (
        b"\xd0\xcf\x11\xe0",
        "is an Excel 97-2003 (.xls) workbook, not a CSV file; export the sheet as 'CSV UTF-8 "
        "(comma delimited)'",
    ),
    (b"PAR1", "is a Parquet file; give it the extension .parquet"),
)
_SAVE_AS = "; save the file as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet) or convert it with iconv"


def _check_not_binary(path: Path, data: bytes) -> None:
    """Refuse files that are not text: compressed, spreadsheet or Parquet files renamed to .csv,
    UTF-16/32 text (with or without a byte-order mark) and files containing NUL bytes."""
    for magic, problem in _MAGIC:
        if data.startswith(magic):
            extra = _SAVE_AS if "encoded" in problem else ""
            raise InputError(path, problem + extra)
    nul = data.find(b"\x00")
    if nul < 0:
        return
    head = data[:4096]
    even, odd = head[0::2], head[1::2]
    if len(head) >= 4 and (odd.count(0) > 0.8 * len(odd) or even.count(0) > 0.8 * len(even)):
        order = "little-endian" if odd.count(0) > even.count(0) else "big-endian"
        raise InputError(
            path,
            f"looks UTF-16 encoded ({order}, no byte-order mark: NUL bytes between "
            f"the characters){_SAVE_AS}",
        )
    line = data.count(b"\n", 0, nul) + 1
    raise InputError(
        path,
        f"contains a NUL byte at byte offset {nul} (line {line}): a binary or corrupted file, "
        "not CSV text",
    )


def _check_utf8(path: Path, data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 4].hex(" ")
        raise InputError(
            path,
            f"is not valid UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"(line {line}; bytes {bad}); save the file as UTF-8 (e.g. 'CSV UTF-8' in a "
            "spreadsheet) or convert it with iconv",
        ) from None


def _first_record(data: bytes) -> list[str]:
    """The header fields (first non-blank record), parsed with the csv module."""
    head = data[: 1 << 20].decode("utf-8", errors="replace")
    with _no_field_limit():
        reader = csv.reader(io.StringIO(head, newline=""))
        try:
            for record in reader:
                if any(field.strip() for field in record):
                    return record
        except csv.Error:  # e.g. an unclosed quote within the first megabyte: pandas says where
            return []
    return []


@contextmanager
def _no_field_limit() -> Iterator[None]:
    """The csv module with no limit on the length of a field (its default is 131,072
    characters; pandas has none), restored afterwards."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _check_header(path: Path, header: list[str]) -> None:
    if len(header) == 1:
        name = header[0]
        for sep, label in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
            if sep in name:
                raise InputError(
                    path,
                    f"looks {label}-delimited; recurstudy expects comma-separated CSV (the "
                    f"header {name!r} was read as a single column)",
                )
    names = [h.strip() for h in header]
    if ROW_COLUMN in names:
        raise InputError(
            path,
            f"the column name {ROW_COLUMN} is reserved (the validator's row numbers); rename it",
        )
    if any(not h for h in names):
        pos = [str(i + 1) for i, h in enumerate(names) if not h]
        raise InputError(path, f"the header has an empty column name (column {', '.join(pos)})")
    dupes = sorted({h for h in names if names.count(h) > 1})
    if dupes:
        raise InputError(path, f"the header repeats column name(s) {', '.join(dupes)}")


def _record_lines(data: bytes, n_rows: int) -> np.ndarray:
    """Line number (1-based) at which each data record starts.

    :meth:`_Scan.record_lines` when its count agrees with pandas' `n_rows`; otherwise (unusual
    quoting) the csv module, which tracks ``line_num``.
    """
    lines = _Scan(data).record_lines()
    if lines is not None and len(lines) == n_rows:
        return lines
    return _record_lines_csv(data, n_rows)


def _record_lines_csv(data: bytes, n_rows: int) -> np.ndarray:
    lines: list[int] = []
    with _no_field_limit():
        reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
        previous_end = 0
        try:
            for record in reader:
                start = previous_end + 1
                previous_end = reader.line_num
                if any(field.strip() for field in record):
                    lines.append(start)
        except csv.Error:  # pragma: no cover - defensive: pandas read it, never guess
            return np.full(n_rows, -1, dtype=np.int64)
    lines = lines[1:]
    if len(lines) != n_rows:  # pragma: no cover - defensive: never guess line numbers
        return np.full(n_rows, -1, dtype=np.int64)
    return np.asarray(lines, dtype=np.int64)


# ----------------------------------------------------------------------------------- Parquet


def _read_parquet(path: Path) -> pd.DataFrame:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.stat().st_size == 0:
        raise InputError(path, "is empty (0 bytes); expected a Parquet file")
    try:
        tbl = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InputError(path, f"is not a readable Parquet file ({_clean(exc)})") from None
    names = tbl.column_names
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(path, f"repeats column name(s) {', '.join(dupes)}")
    if ROW_COLUMN in names:
        raise InputError(
            path,
            f"the column name {ROW_COLUMN} is reserved (the validator's row numbers); rename it",
        )
    try:
        df = tbl.to_pandas(date_as_object=False, ignore_metadata=True)
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise InputError(path, f"has columns pandas cannot load ({_clean(exc)})") from None
    for col in df.columns:
        if df[col].dtype == object or isinstance(df[col].dtype, pd.StringDtype):
            s = df[col].astype(object)
            df[col] = s.where(s != "", np.nan)
    df.index = pd.RangeIndex(len(df))
    df[ROW_COLUMN] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df
