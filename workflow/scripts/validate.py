"""Snakemake entry point: validate the cohort tables (recurstudy.validate does the work)."""

import json
import sys
from pathlib import Path

from recurstudy.validate import validate_cohort, write_clean_tables, write_validation_report

snakemake = globals()["snakemake"]
outcome = validate_cohort(snakemake.config, ".")
write_validation_report(outcome, Path(snakemake.log.report_md).parent)
if not outcome.ok:
    n = len(outcome.failures)
    print(
        f"recurstudy: validation failed: {n} problem(s); see {snakemake.log.report_md}",
        file=sys.stderr,
    )
    sys.exit(1)
write_clean_tables(outcome, Path(snakemake.output.flow).parent)
Path(snakemake.output.flow).write_text(json.dumps(outcome.flow, indent=2, sort_keys=True) + "\n")
