"""Rendering: the report notebook executed with nbclient, and the executed notebook as one offline
HTML page.

- :func:`execute_notebook`: nbclient in the run directory, the run's parameters injected in a
  cell after the one tagged ``parameters`` (:func:`parameters_cell`), no timing metadata;
  :func:`clean_notebook` takes out what varies between runs and the kernel's stderr.
- :func:`render_html`: nbconvert's lab template without require.js, MathJax, mermaid or widgets,
  code cells and prompts hidden; the page is refused if it would load anything from outside.
- :func:`table_html`: a DataFrame as a plain, escaped HTML table with caption and note.

Snakemake's ``notebook:`` directive and papermill are not used: both write run-specific data
(pickled job, start times) into the notebook, which would break byte-identical output.
"""

from __future__ import annotations

import copy
import pprint
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from recurstudy.report.formatting import html_text

OFFLINE_TEMPLATE = r"""
{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style type="text/css">
body.jp-Notebook { max-width: 70rem; margin: 0 auto; padding: 1rem 2rem; }
.jp-Cell { padding: 0; }
.jp-OutputArea-output { overflow-x: visible; }
.jp-OutputArea-output table.rs-table { font-size: 0.85rem; margin: 0.4rem 0 0.2rem 0;
  width: 100%; table-layout: auto; border-collapse: collapse; }
.jp-OutputArea-output table.rs-table td, .jp-OutputArea-output table.rs-table th {
  text-align: left; padding: 0.15rem 0.4rem; vertical-align: top;
  overflow-wrap: break-word; word-break: normal; white-space: normal; min-width: 3.5em; }
.jp-OutputArea-output table.rs-table td code { overflow-wrap: anywhere; }
.jp-OutputArea-output table.rs-table th { overflow-wrap: anywhere; }
.jp-OutputArea-output table.rs-table td, .jp-OutputArea-output table.rs-table th {
  overflow-wrap: anywhere; min-width: 0; }
.jp-OutputArea-output table.rs-appendix { font-size: 0.72rem; }
.jp-OutputArea-output table.rs-appendix td { overflow-wrap: anywhere; }
.rs-table small, .rs-source { font-size: 0.72rem; color: #555; }
.rs-source code { font-size: 0.68rem; overflow-wrap: anywhere; }
.rs-figure img { max-width: 100%; height: auto; }
.rs-figure figcaption, .rs-note { font-size: 0.85rem; color: #444; }
.rs-caption { margin-bottom: 0.1rem; }
.rs-verdict { font-weight: bold; }
.jp-RenderedMarkdown, .jp-RenderedHTMLCommon { overflow-wrap: anywhere; }
</style>
{%- endblock extra_css -%}
"""

EXTERNAL = re.compile(
    r"""(<script[^>]+src=|<link[^>]+href=["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|"""
    r"""@import|<iframe|src=["'](?:https?:)?//)""",
    re.IGNORECASE,
)


def html_exporter() -> Any:
    """nbconvert's HTML exporter with the lab template minus every script from the web, and
    with code cells and prompts hidden."""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_loaders=[DictLoader({"recurstudy_offline.html.j2": OFFLINE_TEMPLATE})],
        template_name="lab",
    )
    exporter.template_file = "recurstudy_offline.html.j2"
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.embed_images = True
    exporter.anchor_link_text = ""
    return exporter


def render_html(nb: Any, title: str = "recurstudy report") -> str:
    """The executed notebook as one self-contained HTML page that makes no request, with
    `title` (the study title) as the page's ``<title>`` (escaped by the template).

    Raises ValueError if the page would still load anything from outside (a script or style
    sheet with a URL, an @import, an iframe).
    """
    exporter = html_exporter()
    nb = copy.deepcopy(nb)
    nb.metadata["title"] = str(title)  # the lab template prefers it to the resources' name
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": str(title)}})
    # The lab theme's CSS comments cite web pages; they load nothing, but a page that must
    # never reach outside should not even mention an address: drop comments inside <style>.
    body = re.sub(
        r"(<style[^>]*>)(.*?)(</style>)",
        lambda m: m.group(1) + re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S) + m.group(3),
        body,
        flags=re.S,
    )
    bad = EXTERNAL.search(body)
    if bad:
        start = max(bad.start() - 80, 0)
        raise ValueError(
            f"the report would load an external resource: {body[start : bad.end() + 80]!r}"
        )
    return body


def parameters_cell(values: Mapping[str, Any]) -> Any:
    """A code cell assigning each parameter (the papermill convention: tagged
    ``injected-parameters``), with a fixed cell id."""
    import nbformat

    src = "# Parameters (injected by workflow/scripts/render_report.py)\n" + "\n".join(
        f"{k} = {pprint.pformat(v, width=96, sort_dicts=True)}" for k, v in values.items()
    )
    cell = nbformat.v4.new_code_cell(src)
    cell.id = "injected-parameters"
    cell.metadata["tags"] = ["injected-parameters"]
    return cell


def execute_notebook(
    template: str | Path, parameters: Mapping[str, Any], run_dir: str | Path, timeout: int = 1200
) -> tuple[Any, str]:
    """Execute the report notebook in `run_dir` with nbclient: the parameters cell is inserted
    after the cell tagged ``parameters``; no timing metadata is recorded; outputs on stderr
    (warnings) are taken out of the notebook and returned separately.

    Returns ``(notebook, stderr_text)``.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(template), as_version=4)
    idx = next(
        (i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])), -1
    )
    nb.cells.insert(idx + 1, parameters_cell(parameters))
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(run_dir)}},
        record_timing=False,
        allow_errors=False,
    )
    client.execute()
    return clean_notebook(nb)


def clean_notebook(nb: Any) -> tuple[Any, str]:
    """Strip what varies between runs: execution metadata, stderr streams (returned as text)."""
    stderr = []
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                stderr.append(out.get("text", ""))
                continue
            out.get("metadata", {}).pop("execution", None)
            kept.append(out)
        cell.outputs = kept
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    return nb, "".join(stderr)


def source_html(paths: str | Path | Iterable[str | Path], run_dir: str | Path = ".") -> str:
    """Small print naming the result file(s) a table or figure was drawn from and each file's
    SHA-256 (:func:`recurstudy.provenance.sha256_file`, the hash ``reports/manifest.json``
    records), so that an auditor can go from a number to its source. A path that does not exist
    is named as missing."""
    from recurstudy.provenance import sha256_file

    if isinstance(paths, (str, Path)):
        paths = [paths]
    parts = []
    for p in paths:
        full = Path(run_dir) / p
        digest = sha256_file(full) if full.is_file() else "missing"
        parts.append(f"<code>{html_text(Path(p).as_posix())}</code> SHA-256 <code>{digest}</code>")
    if not parts:
        return ""
    return f"<p class='rs-source'>Source: {'; '.join(parts)}</p>"


def table_html(
    df: pd.DataFrame,
    caption: str | None = None,
    note: str | None = None,
    *,
    fine_print: Mapping[str, str] | None = None,
    source: str | Path | Iterable[str | Path] | None = None,
    appendix: bool = False,
    run_dir: str | Path = ".",
) -> str:
    """A plain HTML table (cells, headers, caption and note escaped; no ids, no styles: the same
    bytes every time). `fine_print` maps a column to another whose text is shown under it in
    small print (e.g. ``{"model": "internal name"}``: the plain title, the configured name under
    it), the other column then not shown on its own; `source` adds :func:`source_html`;
    `appendix` a smaller font."""
    fine = dict(fine_print or {})
    if df is None or df.empty:
        body = "<p><em>Nothing to show.</em></p>"
    else:
        shown = [c for c in df.columns if c not in fine.values()]
        cls = "rs-table rs-appendix" if appendix else "rs-table"
        body = "".join(
            _table_body(df, cols, fine, cls) for cols in column_chunks(shown, MAX_COLUMNS)
        )
    cap = f"<p class='rs-caption'><strong>{html_text(caption)}</strong></p>" if caption else ""
    foot = f"<p class='rs-note'>{html_text(note)}</p>" if note else ""
    src = source_html(source, run_dir) if source is not None else ""
    return cap + body + foot + src


# A table wider than this is shown as several tables (the first KEY_COLUMNS repeated in each),
# so that nothing scrolls sideways at 1280 px.
MAX_COLUMNS = 12
KEY_COLUMNS = 2


def column_chunks(cols: list, width: int = MAX_COLUMNS, keys: int = KEY_COLUMNS) -> list[list]:
    """`cols` split into groups of at most `width`, each starting with the first `keys`
    columns (which identify the row); one group when the table is narrow enough."""
    if len(cols) <= width:
        return [list(cols)]
    head, rest = list(cols[:keys]), list(cols[keys:])
    step = max(width - keys, 1)
    return [head + rest[i : i + step] for i in range(0, len(rest), step)]


def _table_body(df: pd.DataFrame, cols: list, fine: Mapping[str, str], cls: str) -> str:
    """One escaped ``<table>`` of `cols` (fine print merged as in :func:`table_html`)."""
    # column names as words: "p_value" reads "p value" and can wrap at 1280 px
    head = "".join(f"<th>{html_text(str(c).replace('_', ' '))}</th>" for c in cols)
    lines = []
    for rec in df.to_dict("records"):
        cells = []
        for c in cols:
            v = rec[c]
            text = "" if v is None or (isinstance(v, float) and v != v) else html_text(v)
            if c in fine and str(rec.get(fine[c], "")):
                text += f"<br/><small>{html_text(rec[fine[c]])}</small>"
            cells.append(f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>'
        + "".join(lines)
        + "</tbody></table>"
    )
