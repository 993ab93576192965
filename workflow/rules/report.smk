# The report: a notebook executed with nbclient in the run directory (parameters injected, no
# timing metadata), rendered by nbconvert to one offline HTML page; then the manifest of every
# input and output. recurstudy.report does the work; see docs/report.md.


import sys

from recurstudy.report.pdf import find_chromium
from recurstudy.report.pdf import skip_message as pdf_skip_message


report: "../report/workflow.rst"


# Event rates per arm, rate ratio and rate difference (recurstudy.rates): the first screen's
# numbers, written to a result file so that the report can name it and its hash.
rule rates:
    input:
        counts="results/analysis/counts.parquet",
    output:
        "results/rates.csv",
    log:
        "logs/rates.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        settings=stage_settings(config, "rates"),
        code=source_hash("recurstudy.rates"),
    script:
        "../scripts/rates.py"


rule report:
    input:
        unpack(report_inputs),
        rates="results/rates.csv",
    output:
        html=report(
            "reports/report.html",
            caption="../report/report.rst",
            category="Report",
        ),
        notebook="reports/report.ipynb",
        km=report(
            "reports/figures/km.png", caption="../report/km.rst", category="Figures"
        ),
        mcf=report(
            "reports/figures/mcf.png", caption="../report/mcf.rst", category="Figures"
        ),
        flow_diagram=report(
            "reports/figures/flow.png",
            caption="../report/flow_diagram.rst",
            category="Figures",
        ),
        forest=report(
            "reports/figures/forest.png",
            caption="../report/forest.rst",
            category="Figures",
        ),
        pain=report(
            "reports/figures/pain.png",
            caption="../report/pain.rst",
            category="Figures",
        ),
        claims=report(
            "reports/tables/claims.csv",
            caption="../report/claims.rst",
            category="Tables",
        ),
        flow=report(
            "reports/tables/flow.csv", caption="../report/flow.rst", category="Tables"
        ),
        table1=report(
            "reports/tables/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        rates=report(
            "reports/tables/rates.csv",
            caption="../report/rates.rst",
            category="Tables",
        ),
        models=report(
            "reports/tables/models.csv",
            caption="../report/models.rst",
            category="Tables",
        ),
    log:
        "logs/report.log",
    conda:
        "../envs/recurstudy.yaml"
    resources:
        mem_mb=2000,
    params:
        notebook=f"{workflow.basedir}/workflow/notebooks/report.py.ipynb",
        workflow_dir=workflow.basedir,
        settings=SETTINGS["report"],
        code=source_hash("recurstudy.report", "recurstudy.tipping"),
    script:
        "../scripts/render_report.py"


rule manifest:
    input:
        manifest_inputs,
    output:
        manifest="reports/manifest.json",
        run_info="reports/run_info.json",
    log:
        "logs/manifest.log",
    conda:
        "../envs/recurstudy.yaml"
    params:
        configfiles=[str(f) for f in workflow.configfiles],
        workflow_dir=workflow.basedir,
        settings=SETTINGS["report"],
        code=source_hash("recurstudy.report"),
    script:
        "../scripts/manifest.py"


# The same report as PDF, printed from reports/report.html by headless Chromium with the
# network cut off (recurstudy.report.pdf). Only where Chromium is installed: elsewhere `all`
# leaves it out and one line says so. Not in the manifest (Chromium build and fonts make its
# bytes; the HTML it is printed from is in the manifest), so it is not an input of `manifest`.
CHROMIUM = find_chromium()
PDF_TARGETS = ["reports/report.pdf"] if CHROMIUM else []
if not CHROMIUM:
    print(pdf_skip_message(), file=sys.stderr)


rule report_pdf:
    input:
        html="reports/report.html",
    output:
        pdf="reports/report.pdf",
    log:
        "logs/report_pdf.log",
    conda:
        "../envs/recurstudy.yaml"
    resources:
        mem_mb=2000,
    params:
        chromium=CHROMIUM or "chromium",
        code=source_hash("recurstudy.report.pdf"),
    script:
        "../scripts/report_pdf.py"
