"""CSV outputs are safe to open in a spreadsheet (no formula injection) and deterministic."""

import pandas as pd

from recurstudy.csvout import spreadsheet_safe, write_csv


def test_formula_cells_are_quoted_numbers_are_not(tmp_path):
    df = pd.DataFrame(
        {
            "statement": ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "plain", None],
            "value": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0],
        }
    )
    safe = spreadsheet_safe(df)
    assert list(safe["statement"][:5]) == [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "plain",
    ]
    assert pd.isna(safe["statement"].iloc[5])
    assert list(safe["value"]) == list(df["value"])  # negative numbers stay numbers
    assert df["statement"].iloc[0].startswith("=")  # the input is not modified
    write_csv(df, tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text()
    assert "\n\"'=HYPERLINK" in text and ",-1.5\n" in text and "\n'+1,2\n" in text
