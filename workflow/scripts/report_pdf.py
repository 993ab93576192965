"""Snakemake entry point: reports/report.pdf printed from reports/report.html by headless
Chromium, offline, with fixed dates (recurstudy.report.pdf). The log names the Chromium version
and the SHA-256 of the HTML printed; the PDF is not in the manifest."""

import logging

from recurstudy.report.pdf import print_pdf

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
info = print_pdf(snakemake.input.html, snakemake.output.pdf, snakemake.params.chromium)
for key, value in info.items():
    logging.info("%s: %s", key, value)
logging.info("wrote %s", snakemake.output.pdf)
