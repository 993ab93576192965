"""Write the malformed-cohort corpus: one folder per case under tests/bad_inputs/.

Run from the repository root: ``python tests/bad_inputs/make_corpus.py`` (deterministic; the
folders are committed, this script says how each was made, byte for byte).

Each folder holds the cohort files (``participants.csv``, ``episodes.csv``, optional
``pain_scores.csv``), an optional ``config.yaml`` merged over the test's minimal config (whose
``data:`` names the three files when present), and ``expect.yaml``:

- ``outcome: error`` with ``failure`` (``table``, ``check`` fragment, optional ``column``,
  ``row`` and ``value`` fragment): a row of ``failure_cases.csv`` must match it, validation must
  exit 1 and write no clean tables;
- ``outcome: ok`` with ``warning`` (a fragment of a warning on stderr and in report.md, or
  ``null`` when none is expected): validation exits 0 and writes the clean tables;
- ``why``: what the case is about; ``degenerate: true`` marks a cohort that validates but on
  which the models must report failure rather than a nonsense estimate.
"""

from __future__ import annotations

import codecs
import gzip
import io
import shutil
import zipfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

P_HEAD = "participant_id,arm,enrolled_on,followup_end,age\n"
P_ROWS = [
    "P01,control,2025-01-06,2025-07-06,34",
    "P02,control,2025-01-13,2025-07-13,41",
    "P03,control,2025-02-03,2025-08-03,29",
    "P04,intervention,2025-01-08,2025-07-08,52",
    "P05,intervention,2025-01-20,2025-07-20,38",
    "P06,intervention,2025-02-10,2025-08-10,45",
]
E_HEAD = "participant_id,onset_on,resolved_on,severity\n"
E_ROWS = [
    "P01,2025-02-10,2025-02-14,5",
    "P01,2025-04-02,2025-04-05,4",
    "P02,2025-03-01,2025-03-03,6",
    "P04,2025-05-11,2025-05-12,3",
    "P06,2025-03-15,,7",
]
S_HEAD = "participant_id,assessed_on,nrs\n"
S_ROWS = [
    "P01,2025-01-06,6",
    "P01,2025-02-17,4",
    "P04,2025-01-08,5",
    "P04,2025-02-19,2",
]


def participants(*rows: str, head: str = P_HEAD) -> str:
    return head + "".join(r + "\n" for r in (rows or P_ROWS))


def episodes(*rows: str, head: str = E_HEAD) -> str:
    return head + "".join(r + "\n" for r in (rows or E_ROWS))


def pain(*rows: str) -> str:
    return S_HEAD + "".join(r + "\n" for r in (rows or S_ROWS))


def replace_row(rows: list[str], index: int, new: str) -> list[str]:
    out = list(rows)
    out[index] = new
    return out


CASES: dict[str, dict] = {}


def case(
    name: str,
    why: str,
    expect: dict,
    files: dict[str, str | bytes] | None = None,
    config: dict | None = None,
) -> None:
    """Register a case: files default to the base participants and episodes tables."""
    f: dict[str, str | bytes] = {"participants.csv": participants(), "episodes.csv": episodes()}
    f.update(files or {})
    CASES[name] = {"why": why, "expect": expect, "files": f, "config": config}


def error(table: str, check: str, **where: object) -> dict:
    return {"outcome": "error", "failure": {"table": table, "check": check, **where}}


def ok(warning: str | None = None, **extra: object) -> dict:
    return {"outcome": "ok", "warning": warning, **extra}


# ------------------------------------------------------------------------------ encodings

case(
    "enc_latin1",
    "participants saved as Latin-1 (an accented site name): not UTF-8, byte offset named",
    error("participants", "readable", value="not valid UTF-8: byte 0xeb"),
    {
        "participants.csv": (
            "participant_id,arm,enrolled_on,followup_end,site\n"
            "P01,control,2025-01-06,2025-07-06,Zo\u00eb\n"
            "P04,intervention,2025-01-08,2025-07-08,K\u00f6ln\n"
        ).encode("latin-1")
    },
)
case(
    "enc_utf16_bom",
    "participants saved as UTF-16 with a byte-order mark (Excel's 'Unicode text')",
    error("participants", "readable", value="UTF-16"),
    {"participants.csv": codecs.BOM_UTF16_LE + participants().encode("utf-16-le")},
)
case(
    "enc_utf16_nobom",
    "episodes saved as UTF-16 LE without a byte-order mark: NUL bytes between ASCII letters "
    "(valid UTF-8, so it must be caught before parsing)",
    error("episodes", "readable", value="UTF-16"),
    {"episodes.csv": episodes().encode("utf-16-le")},
)
case(
    "enc_utf16_be",
    "participants saved as UTF-16 BE with a byte-order mark",
    error("participants", "readable", value="UTF-16"),
    {"participants.csv": codecs.BOM_UTF16_BE + participants().encode("utf-16-be")},
)
case(
    "enc_utf8_bom",
    "UTF-8 with a byte-order mark (Excel's 'CSV UTF-8'): accepted, the first column name intact",
    ok(None),
    {"participants.csv": codecs.BOM_UTF8 + participants().encode()},
)
case(
    "enc_crlf",
    "Windows line ends (CRLF) and a final line without a line end: accepted",
    ok(None),
    {
        "participants.csv": participants().replace("\n", "\r\n").rstrip("\r\n").encode(),
        "episodes.csv": episodes().replace("\n", "\r\n").encode(),
    },
)
case(
    "enc_gzip_as_csv",
    "a gzip-compressed file saved as episodes.csv",
    error("episodes", "readable", value="gzip"),
    {"episodes.csv": gzip.compress(episodes().encode(), mtime=0)},
)


def _xlsx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("[Content_Types].xml", date_time=(2025, 1, 1, 0, 0, 0))
        z.writestr(info, '<?xml version="1.0"?><Types/>')
        info = zipfile.ZipInfo("xl/workbook.xml", date_time=(2025, 1, 1, 0, 0, 0))
        z.writestr(info, '<?xml version="1.0"?><workbook/>')
    return buf.getvalue()


case(
    "enc_xlsx_as_csv",
    "an Excel workbook (.xlsx, a ZIP archive) renamed to participants.csv",
    error("participants", "readable", value="Excel"),
    {"participants.csv": _xlsx()},
)
case(
    "enc_parquet_as_csv",
    "a Parquet file renamed to episodes.csv",
    error("episodes", "readable", value="Parquet"),
    {"episodes.csv": b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00\x12\x00\x00PAR1"},
)
case(
    "enc_nul_in_text",
    "a NUL byte inside a UTF-8 participants file (a truncated or binary-corrupted export)",
    error("participants", "readable", value="NUL"),
    {"participants.csv": participants().replace("P03", "P0\x003").encode()},
)
case(
    "enc_cp1252_quotes",
    "Windows-1252 curly quotes in a free-text column: not UTF-8",
    error("episodes", "readable", value="not valid UTF-8"),
    {
        "episodes.csv": (
            "participant_id,onset_on,resolved_on,severity,note\n"
            "P01,2025-02-10,2025-02-14,5,\u201cbad\u201d day\n"
        ).encode("cp1252")
    },
)

# ----------------------------------------------------------------------------- delimiters

case(
    "delim_semicolon",
    "semicolon-separated (a European spreadsheet's CSV)",
    error("participants", "readable", value="';'-delimited"),
    {"participants.csv": participants().replace(",", ";")},
)
case(
    "delim_tab",
    "tab-separated episodes",
    error("episodes", "readable", value="tab-delimited"),
    {"episodes.csv": episodes().replace(",", "\t")},
)
case(
    "delim_extra_field",
    "one data row with more fields than the header (an unquoted comma in a value)",
    error("participants", "readable", value="more fields than the header"),
    {"participants.csv": participants(*replace_row(P_ROWS, 2, P_ROWS[2] + ",extra"))},
)
case(
    "delim_short_row",
    "a data row with fewer fields than the header: the missing cells are missing values",
    error("participants", "missing value", column="followup_end", row=4),
    {"participants.csv": participants(*replace_row(P_ROWS, 2, "P03,control,2025-02-03"))},
)

# -------------------------------------------------------------------------------- quoting

case(
    "quote_newline_in_field",
    "a quoted free-text field spanning two lines: accepted, and the next row's problem is "
    "reported at its own line of the file (5, not 4)",
    error("participants", "age in [16, 100]", column="age", row=5, value="7"),
    {
        "participants.csv": participants(
            'P01,control,2025-01-06,2025-07-06,34,"first line\nsecond line"',
            *[r + "," for r in P_ROWS[1:2]],
            "P03,control,2025-02-03,2025-08-03,7,",
            *[r + "," for r in P_ROWS[3:]],
            head=P_HEAD.replace("\n", ",note\n"),
        )
    },
)
case(
    "quote_unbalanced",
    "an opening quote never closed: the rest of the file would be one field",
    error("episodes", "readable", value="not a well-formed CSV"),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 1, 'P01,"2025-04-02,2025-04-05,4'))},
)
case(
    "quote_newline_in_id",
    "a quoted participant id containing a line break",
    error("participants", "whitespace", column="participant_id", row=3),
    {
        "participants.csv": participants(
            *replace_row(P_ROWS, 1, '"P0\n2",control,2025-01-13,2025-07-13,41')
        )
    },
)
case(
    "quote_doubled_quotes",
    "doubled quotes inside a quoted field (RFC 4180): accepted",
    ok("not in the data contract"),
    {
        "episodes.csv": episodes(
            *[r + "," for r in E_ROWS[:-1]],
            'P06,2025-03-15,,7,"said ""never again"", twice"',
            head=E_HEAD.replace("\n", ",note\n"),
        )
    },
)

# ---------------------------------------------------------------------------- long values

case(
    "long_id",
    "a participant id of 20,000 characters, used in both tables: accepted as it is",
    ok(None),
    {
        "participants.csv": participants(*replace_row(P_ROWS, 0, "X" * 20000 + P_ROWS[0][3:])),
        "episodes.csv": episodes(*[r.replace("P01,", "X" * 20000 + ",") for r in E_ROWS]),
    },
)
case(
    "long_line",
    "a 140,000-character free-text cell (longer than Python csv's default field limit)",
    ok("not in the data contract"),
    {
        "participants.csv": participants(
            *[r + ",x" for r in P_ROWS[:-1]],
            P_ROWS[-1] + "," + "y" * 140000,
            head=P_HEAD.replace("\n", ",note\n"),
        )
    },
)
case(
    "long_header_name",
    "a 140,000-character column name (a pasted blob in the header)",
    ok("not in the data contract"),
    {
        "participants.csv": participants(
            *[r + ",1" for r in P_ROWS], head=P_HEAD.replace("\n", "," + "h" * 140000 + "\n")
        )
    },
)

# ------------------------------------------------------------------------------------ ids

case(
    "id_case",
    "ids differing only by case ('P01' and 'p01'): an error naming both rows, never two people",
    error(
        "participants",
        "participant_id unique ignoring case and surrounding whitespace",
        column="participant_id",
        row=8,
        value="p01",
    ),
    {"participants.csv": participants(*P_ROWS, "p01,intervention,2025-03-01,2025-09-01,30")},
)
case(
    "id_whitespace",
    "an id with a trailing space ('P01 ' beside 'P01'): an error, never a silent second person",
    error(
        "participants",
        "participant_id without surrounding whitespace",
        column="participant_id",
        row=8,
        value="P01 ",
    ),
    {"participants.csv": participants(*P_ROWS, '"P01 ",intervention,2025-03-01,2025-09-01,30')},
)
case(
    "id_leading_space_only",
    "one id with a leading space and no twin: still an error (whitespace is never stripped)",
    error(
        "participants",
        "participant_id without surrounding whitespace",
        column="participant_id",
        row=2,
        value=" P01",
    ),
    {
        "participants.csv": participants(*replace_row(P_ROWS, 0, " " + P_ROWS[0])),
        "episodes.csv": episodes(*[r for r in E_ROWS if not r.startswith("P01")]),
    },
)
case(
    "id_whitespace_in_episodes",
    "an episode's id with a trailing tab ('P02\\t'): an error on the episode",
    error(
        "episodes",
        "participant_id without surrounding whitespace",
        column="participant_id",
        row=4,
    ),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 2, '"P02\t",2025-03-01,2025-03-03,6'))},
)
case(
    "id_case_in_episodes",
    "an episode whose id differs from its participant's only by case: unknown participant",
    error("episodes", "participant_id in participants", column="participant_id", row=3),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 1, "p01,2025-04-02,2025-04-05,4"))},
)
case(
    "id_leading_zeros",
    "numeric ids with leading zeros: '007' and '7' are two participants, ids stay text",
    ok(None, ids=["007", "7", "0010", "10"]),
    {
        "participants.csv": participants(
            "007,control,2025-01-06,2025-07-06,34",
            "7,control,2025-01-13,2025-07-13,41",
            "0010,intervention,2025-01-08,2025-07-08,52",
            "10,intervention,2025-01-20,2025-07-20,38",
        ),
        "episodes.csv": episodes(
            "007,2025-02-10,2025-02-14,5",
            "7,2025-03-01,2025-03-03,6",
            "0010,2025-05-11,2025-05-12,3",
        ),
    },
)
case(
    "id_missing",
    "a participant row without an id",
    error("participants", "missing value", column="participant_id", row=4),
    {"participants.csv": participants(*replace_row(P_ROWS, 2, P_ROWS[2][3:]))},
)
case(
    "id_duplicate",
    "the same id twice in participants: every copy reported",
    error("participants", "participant_id unique", column="participant_id", row=3),
    {"participants.csv": participants(*replace_row(P_ROWS, 1, P_ROWS[0]))},
)

# ---------------------------------------------------------------------------------- dates

_DATE_CHECK = "not a date (YYYY-MM-DD"
for name, value, why in [
    ("date_dmy", "06/01/2025", "day/month/year: ambiguous with month/day, so refused"),
    ("date_mdy", "01/06/2025", "month/day/year: ambiguous with day/month, so refused"),
    ("date_dmy_dots", "06.01.2025", "day.month.year (German style)"),
    ("date_excel_serial", "45663", "an Excel serial day number"),
    ("date_with_time", "2025-01-06 10:30:00", "a date with a time of day"),
    ("date_iso_t_tz", "2025-01-06T10:30:00+02:00", "an ISO datetime with a time zone"),
    ("date_utc_z", "2025-01-06T00:00:00Z", "an ISO datetime in UTC"),
    ("date_unpadded", "2025-1-6", "ISO without zero padding"),
    ("date_invalid_day", "2025-02-30", "a day that does not exist"),
    ("date_month_name", "6 Jan 2025", "a date with a month name"),
    ("date_yyyymmdd", "20250106", "a compact basic-format date"),
    ("date_far_future", "9999-12-31", "a placeholder date outside the supported range"),
    ("date_na_string", "NA", "the text NA in a required date"),
]:
    case(
        name,
        f"enrolled_on as {why} ({value!r}): only YYYY-MM-DD is accepted, the message says so",
        error("participants", _DATE_CHECK, column="enrolled_on", row=2, value=value),
        {
            "participants.csv": participants(
                *replace_row(P_ROWS, 0, P_ROWS[0].replace("2025-01-06", value, 1))
            )
        },
    )
case(
    "date_null_strings_optional",
    "'null', 'NaN' and 'None' in the optional resolved_on: not dates (only an empty cell is "
    "missing)",
    error("episodes", _DATE_CHECK, column="resolved_on", row=3, value="null"),
    {
        "episodes.csv": episodes(
            "P01,2025-02-10,NaN,5",
            "P01,2025-04-02,null,4",
            "P02,2025-03-01,None,6",
        )
    },
)
case(
    "date_mixed_formats",
    "ISO dates and day/month/year mixed in one column: each non-ISO value is reported",
    error("episodes", _DATE_CHECK, column="onset_on", row=4, value="01/03/2025"),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 2, "P02,01/03/2025,2025-03-03,6"))},
)

# -------------------------------------------------------------------------------- numbers

for name, value, check, why in [
    ("num_na_string", "NA", "not a number", "the text NA"),
    ("num_nan", "NaN", "not a number", "NaN"),
    ("num_inf", "inf", "not a number", "infinity"),
    ("num_neg_inf", "-Infinity", "not a number", "minus infinity"),
    ("num_overflow", "1e400", "not a number", "a number beyond double precision"),
    ("num_decimal_comma", "41,5", "not a number", "a decimal comma (quoted)"),
    ("num_negative", "-3", "age in [16, 100]", "a negative age"),
    ("num_huge", "1e300", "age in [16, 100]", "a huge age"),
    ("num_units", "34 years", "not a number", "a number with its unit"),
]:
    cell = f'"{value}"' if "," in value else value
    case(
        name,
        f"age as {why} ({value!r})",
        error("participants", check, column="age", row=3, value=value),
        {
            "participants.csv": participants(
                *replace_row(P_ROWS, 1, P_ROWS[1].rsplit(",", 1)[0] + "," + cell)
            )
        },
    )
case(
    "num_integer_fraction",
    "prior_episodes 2.5 and 1e20 (not whole, beyond exact integers): not an integer",
    error("participants", "not an integer", column="prior_episodes", row=3, value="1e20"),
    {
        "participants.csv": participants(
            *[
                r + "," + v
                for r, v in zip(P_ROWS, ["2.5", "1e20", "0", "1", "-0", ""], strict=True)
            ],
            head=P_HEAD.replace("\n", ",prior_episodes\n"),
        )
    },
)
case(
    "num_severity_negative",
    "an episode with severity -1",
    error("episodes", "severity in [0, 10]", column="severity", row=2, value="-1"),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 0, "P01,2025-02-10,2025-02-14,-1"))},
)
case(
    "num_nrs_huge",
    "a pain score of 99999999999 (NRS is 0-10)",
    error("pain_scores", "nrs in [0, 10]", column="nrs", row=3),
    {"pain_scores.csv": pain(*replace_row(S_ROWS, 1, "P01,2025-02-17,99999999999"))},
)

# ------------------------------------------------------------------- follow-up and episodes

case(
    "followup_before_enrolment",
    "follow-up ending before enrolment",
    error("participants", "followup_end >= enrolled_on", column="followup_end", row=4),
    {
        "participants.csv": participants(
            *replace_row(P_ROWS, 2, "P03,control,2025-02-03,2024-08-03,29")
        )
    },
)
case(
    "episode_after_followup",
    "an episode after the participant's follow-up ended",
    error("episodes", "onset_on <= followup_end", column="onset_on", row=5),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 3, "P04,2025-09-11,2025-09-12,3"))},
)
case(
    "episode_before_enrolment",
    "an unresolved episode before enrolment",
    error(
        "episodes", "onset_on > enrolled_on or resolved_on > enrolled_on", column="onset_on", row=4
    ),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 2, "P02,2024-12-01,,6"))},
)
case(
    "episode_resolved_before_onset",
    "an episode resolved before its onset",
    error("episodes", "resolved_on >= onset_on", column="resolved_on", row=3),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 1, "P01,2025-04-02,2025-03-05,4"))},
)
case(
    "episode_duplicate",
    "the same episode twice (same participant and onset)",
    error("episodes", "(participant_id, onset_on) unique", column="onset_on", row=3),
    {"episodes.csv": episodes(*E_ROWS[:2], E_ROWS[1], *E_ROWS[2:])},
)
case(
    "episodes_overlapping",
    "an episode starting before the previous one of the same participant resolved: accepted "
    "(each onset is an event), with a warning",
    ok("overlap"),
    {"episodes.csv": episodes(*replace_row(E_ROWS, 1, "P01,2025-02-12,2025-02-20,4"))},
)
case(
    "episode_unknown_participant",
    "an episode of a participant who is not in the participants table",
    error("episodes", "participant_id in participants", column="participant_id", row=7),
    {"episodes.csv": episodes(*E_ROWS, "P99,2025-03-01,2025-03-02,5")},
)
case(
    "pain_before_enrolment",
    "a pain score before enrolment",
    error("pain_scores", "assessed_on >= enrolled_on", column="assessed_on", row=2),
    {"pain_scores.csv": pain(*replace_row(S_ROWS, 0, "P01,2024-12-06,6"))},
)

# -------------------------------------------------------------------------------- columns

case(
    "col_duplicate",
    "the column arm twice in the header",
    error("participants", "readable", value="repeats column name(s) arm"),
    {
        "participants.csv": participants(
            *[r + ",control" for r in P_ROWS], head=P_HEAD.replace("\n", ",arm\n")
        )
    },
)
case(
    "col_duplicate_whitespace",
    "'onset_on' and ' onset_on ' in one header: the same name once spaces are ignored",
    error("episodes", "readable", value="repeats column name(s) onset_on"),
    {
        "episodes.csv": episodes(
            *[r + ",x" for r in E_ROWS], head=E_HEAD.replace("\n", ", onset_on \n")
        )
    },
)
case(
    "col_missing_required",
    "no followup_end column",
    error("participants", "column present", column="followup_end"),
    {
        "participants.csv": "participant_id,arm,enrolled_on\n"
        + "".join(",".join(r.split(",")[:3]) + "\n" for r in P_ROWS)
    },
)
case(
    "col_wrong_case",
    "the header says Participant_ID: names are matched exactly, so participant_id is absent",
    error("participants", "column present", column="participant_id"),
    {"participants.csv": participants(head=P_HEAD.replace("participant_id", "Participant_ID"))},
)
case(
    "col_extra_unknown",
    "columns the contract does not know: kept, not checked, and named in a warning",
    ok("not in the data contract"),
    {
        "participants.csv": participants(
            *[r + ",x,1" for r in P_ROWS], head=P_HEAD.replace("\n", ",notes,bmi\n")
        )
    },
)
case(
    "col_reserved_row",
    "a column named _row (the validator's own source-line column)",
    error("participants", "readable", value="_row"),
    {
        "participants.csv": participants(
            *[r + ",1" for r in P_ROWS], head=P_HEAD.replace("\n", ",_row\n")
        )
    },
)
case(
    "col_empty_name",
    "a header with an empty column name (a trailing comma)",
    error("participants", "readable", value="empty column name"),
    {
        "participants.csv": participants(
            *[r + "," for r in P_ROWS], head=P_HEAD.replace("\n", ",\n")
        )
    },
)
case(
    "col_covariate_missing",
    "a covariate declared in the config but absent from the file",
    error("participants", "column present", column="bmi"),
    config={"covariates": {"bmi": "numeric"}},
)
case(
    "col_adjust_for_empty",
    "a covariate under adjust_for with an empty cell: the adjusted models need it",
    error("participants", "missing value (covariate in adjust_for)", column="age", row=4),
    {"participants.csv": participants(*replace_row(P_ROWS, 2, P_ROWS[2].rsplit(",", 1)[0] + ","))},
    config={"covariates": {"age": "numeric"}, "adjust_for": ["age"]},
)
case(
    "col_boolean_bad",
    "a boolean covariate holding 'maybe'",
    error("participants", "not a boolean", column="smoker", row=5, value="maybe"),
    {
        "participants.csv": participants(
            *[
                r + "," + v
                for r, v in zip(P_ROWS, ["yes", "no", "TRUE", "maybe", "0", ""], strict=True)
            ],
            head=P_HEAD.replace("\n", ",smoker\n"),
        )
    },
    config={"covariates": {"smoker": "boolean"}},
)

# --------------------------------------------------------------------------------- tables

case(
    "table_pain_absent",
    "no pain_scores table in the config: valid (pain models are reported as skipped)",
    ok(None),
)
case(
    "table_pain_header_only",
    "a pain_scores file with a header and no rows: valid",
    ok(None),
    {"pain_scores.csv": S_HEAD},
)
case(
    "table_episodes_header_only",
    "no episodes at all: valid, with a warning that no arm has an event",
    ok("no episode"),
    {"episodes.csv": E_HEAD},
)
case(
    "table_participants_header_only",
    "a participants file with only its header",
    error("participants", "readable", value="no data rows"),
    {"participants.csv": P_HEAD},
)
case(
    "table_empty_file",
    "an empty (0-byte) episodes file",
    error("episodes", "readable", value="0 bytes"),
    {"episodes.csv": ""},
)
case(
    "table_blank_lines",
    "an episodes file of blank lines only",
    error("episodes", "readable", value="only blank lines"),
    {"episodes.csv": "\n  \n\t\n"},
)
case(
    "table_file_missing",
    "the config names an episodes file that does not exist",
    error("episodes", "readable", value="file not found"),
    config={"data": {"episodes": "no_such_file.csv"}},
)
case(
    "table_unknown_suffix",
    "episodes given as a .txt file",
    error("episodes", "readable", value="unknown file type"),
    {"episodes.txt": episodes()},
    config={"data": {"episodes": "episodes.txt"}},
)

# --------------------------------------------------------------------------------- labels

case(
    "arm_unknown_labels",
    "arms coded 0/1 while the config expects control/intervention",
    error("participants", "arm in {control, intervention}", column="arm", row=2, value="0"),
    {
        "participants.csv": participants(
            *[r.replace(",control,", ",0,").replace(",intervention,", ",1,") for r in P_ROWS]
        )
    },
)
case(
    "arm_trailing_space",
    "an arm label with a trailing space ('control ')",
    error("participants", "arm in {control, intervention}", column="arm", row=3, value="control "),
    {
        "participants.csv": participants(
            *replace_row(P_ROWS, 1, P_ROWS[1].replace("control", '"control "'))
        )
    },
)
case(
    "end_reason_unknown",
    "an end_reason that is not in the contract",
    error("participants", "end_reason in {", column="end_reason", row=2, value="moved away"),
    {
        "participants.csv": participants(
            *[
                r + "," + v
                for r, v in zip(
                    P_ROWS,
                    ["moved away", "completed", "", "withdrawn", "completed", "lost_to_followup"],
                    strict=True,
                )
            ],
            head=P_HEAD.replace("\n", ",end_reason\n"),
        )
    },
)

# ------------------------------------------------------------------ valid but degenerate

_ctrl = [f"C{i:02d},control,2025-01-{i + 1:02d},2025-07-{i + 1:02d},{30 + i}" for i in range(1, 11)]
_intv = [
    f"T{i:02d},intervention,2025-01-{i + 1:02d},2025-07-{i + 1:02d},{30 + i}" for i in range(1, 11)
]
_ctrl_eps = [
    f"C{i:02d},2025-{m:02d}-15,2025-{m:02d}-18,5"
    for i in range(1, 11)
    for m in range(2, 2 + i % 4 + 1)
]
case(
    "degenerate_one_arm_no_episodes",
    "twenty participants, episodes only in the control arm: valid, warned, and the models "
    "must report the intervention effect as not estimable",
    ok("no episode in the intervention arm", degenerate=True),
    {"participants.csv": participants(*_ctrl, *_intv), "episodes.csv": episodes(*_ctrl_eps)},
)
case(
    "degenerate_single_participant",
    "a cohort of one participant: valid, warned",
    ok("1 participant", degenerate=True),
    {
        "participants.csv": participants(P_ROWS[0]),
        "episodes.csv": episodes(*E_ROWS[:2]),
    },
)
case(
    "degenerate_all_censored_day0",
    "every participant's follow-up ends on the day of enrolment: nobody is at risk",
    ok("no follow-up after enrolment", degenerate=True),
    {
        "participants.csv": participants(
            *[
                ",".join([*r.split(",")[:3], r.split(",")[2], r.split(",")[4]])
                for r in _ctrl + _intv
            ]
        ),
        "episodes.csv": E_HEAD,
    },
)
case(
    "degenerate_one_arm_only",
    "every participant in the control arm: valid, warned, no between-arm comparison",
    ok("no participant in the intervention arm", degenerate=True),
    {"participants.csv": participants(*_ctrl), "episodes.csv": episodes(*_ctrl_eps)},
)

# ---------------------------------------------------------------------------- exclusions

case(
    "exclude_all",
    "on_invalid: exclude and every participant has a failing row: validation fails",
    error("participants", "age in [16, 100]", column="age", row=2),
    {"participants.csv": participants(*[r.rsplit(",", 1)[0] + ",7" for r in P_ROWS])},
    config={"on_invalid": "exclude"},
)
case(
    "exclude_some",
    "on_invalid: exclude with two bad participants: the rest are analysed, the two listed",
    ok("participants excluded", excluded=["P02", "P04"]),
    {
        "participants.csv": participants(
            *replace_row(P_ROWS, 1, P_ROWS[1].rsplit(",", 1)[0] + ",7")
        ),
        "episodes.csv": episodes(*replace_row(E_ROWS, 3, "P04,2025-09-11,2025-09-12,3")),
    },
    config={"on_invalid": "exclude"},
)
case(
    "exclude_unreadable_table",
    "on_invalid: exclude cannot attribute an unreadable table to anyone: validation fails",
    error("episodes", "readable", value="';'-delimited"),
    {"episodes.csv": episodes().replace(",", ";")},
    config={"on_invalid": "exclude"},
)


case(
    "enc_cr_only",
    "classic Mac line ends (CR only): accepted",
    ok(None),
    {"participants.csv": participants().replace("\n", "\r")},
)
case(
    "col_many_unknown",
    "5,000 extra columns: accepted, the warning names the first ten",
    ok("5000 column(s) not in the data contract"),
    {
        "participants.csv": participants(
            *[r + ",1" * 5000 for r in P_ROWS],
            head=P_HEAD.replace("\n", "".join(f",c{i}" for i in range(5000)) + "\n"),
        )
    },
)
case(
    "col_html_name",
    "a column named <script>alert(1)</script>: named in the warning, escaped in report.md",
    ok("not in the data contract", report_md_excludes="<script>"),
    {
        "participants.csv": participants(
            *[r + ",1" for r in P_ROWS],
            head=P_HEAD.replace("\n", ",<script>alert(1)</script>\n"),
        )
    },
)

# -------------------------------------------------------------------------------- Parquet


def _parquet(**columns: object) -> bytes:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    base = {
        "participant_id": pa.array(["P01", "P04"]),
        "arm": pa.array(["control", "intervention"]),
        "enrolled_on": pa.array([dt.date(2025, 1, 6), dt.date(2025, 1, 8)]),
        "followup_end": pa.array([dt.date(2025, 7, 6), dt.date(2025, 7, 8)]),
    }
    base.update(columns)  # type: ignore[arg-type]
    buf = io.BytesIO()
    pq.write_table(pa.table(base), buf, compression="zstd")
    return buf.getvalue()


def _pq_case(name: str, why: str, expect: dict, columns: dict) -> None:
    case(
        name,
        why,
        expect,
        {"participants.parquet": _parquet(**columns), "episodes.csv": episodes(*E_ROWS[:2])},
        config={"data": {"participants": "participants.parquet"}},
    )
    del CASES[name]["files"]["participants.csv"]


def _pq_columns() -> dict[str, dict]:
    import datetime as dt

    import pyarrow as pa

    return {
        "pq_date_out_of_range": {
            "followup_end": pa.array([dt.date(2025, 7, 6), dt.date(9999, 12, 31)])
        },
        "pq_time_of_day": {"enrolled_on": pa.array([dt.time(1, 0), dt.time(2, 0)])},
        "pq_int_ids_null": {"participant_id": pa.array([1, None], type=pa.int64())},
        "pq_tz_timestamps": {
            "enrolled_on": pa.array(
                [dt.datetime(2025, 1, 5, 23, 30), dt.datetime(2025, 1, 8, 9, 0)],
                type=pa.timestamp("us", tz="Europe/Paris"),
            )
        },
    }


_PQ = _pq_columns()
_pq_case(
    "pq_date_out_of_range",
    "a Parquet date column holding the placeholder 9999-12-31 (beyond the supported range "
    "1677-09-22 .. 2262-04-11): not a date, no crash",
    error("participants", _DATE_CHECK, column="followup_end", row=2, value="9999-12-31"),
    _PQ["pq_date_out_of_range"],
)
_pq_case(
    "pq_time_of_day",
    "a Parquet time-of-day column where a date belongs",
    error("participants", _DATE_CHECK, column="enrolled_on", row=1, value="01:00:00"),
    _PQ["pq_time_of_day"],
)
_pq_case(
    "pq_int_ids_null",
    "integer ids in Parquet with a null: the null is a missing id (ids are compared as text)",
    error("participants", "missing value", column="participant_id", row=2),
    _PQ["pq_int_ids_null"],
)
_pq_case(
    "pq_tz_timestamps",
    "Parquet timestamps with a time zone: the local date is kept, the time of day dropped",
    ok(None),
    _PQ["pq_tz_timestamps"],
)


# --------------------------------------------------------------------------------- write


def main() -> None:
    for old in HERE.iterdir():
        if old.is_dir() and (old / "expect.yaml").exists():
            shutil.rmtree(old)
    for name, spec in sorted(CASES.items()):
        folder = HERE / name
        folder.mkdir()
        for fname, content in spec["files"].items():
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            (folder / fname).write_bytes(data)
        if spec["config"]:
            text = yaml.safe_dump(spec["config"], sort_keys=True, allow_unicode=True)
            (folder / "config.yaml").write_text(text, encoding="utf-8")
        expect = {"why": spec["why"], **spec["expect"]}
        (folder / "expect.yaml").write_text(
            yaml.safe_dump(expect, sort_keys=False, allow_unicode=True, width=100),
            encoding="utf-8",
        )
    print(f"{len(CASES)} cases written under {HERE}")


if __name__ == "__main__":
    main()
