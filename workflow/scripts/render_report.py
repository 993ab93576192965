"""Snakemake entry point: execute the report notebook (nbclient) and render it to offline HTML.

The notebook gets its parameters (the validated config, the source commit, the assets folder) in
an injected cell; it runs in the run directory and reads only result files. The executed notebook
is kept beside the HTML; warnings the kernel printed go to the log, not into the report.
"""

import logging
from pathlib import Path

import nbformat

from recurstudy.config import study_text
from recurstudy.provenance import git_commit
from recurstudy.report.render import execute_notebook, render_html
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
out_html = Path(snakemake.output.html)
out_nb = Path(snakemake.output.notebook)
out_html.parent.mkdir(parents=True, exist_ok=True)
config = dict(load_settings(snakemake.params.settings, "report"))
parameters = {
    "config": config,
    "source_commit": git_commit(snakemake.params.workflow_dir),
    "assets": str(out_html.parent),
}
nb, stderr = execute_notebook(snakemake.params.notebook, parameters, ".")
if stderr:
    logging.info("kernel stderr:\n%s", stderr)
nbformat.write(nb, str(out_nb))
out_html.write_text(render_html(nb, title=study_text(config)["title"]), encoding="utf-8")
logging.info("wrote %s and %s", out_html, out_nb)
