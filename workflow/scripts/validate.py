"""Snakemake entry point: validate the cohort tables (recurstudy.validate does the work)."""

import json
import sys
from pathlib import Path

from recurstudy.settings import load_settings
from recurstudy.validate import (
    outcome_message,
    validate_cohort,
    write_clean_tables,
    write_validation_report,
)

snakemake = globals()["snakemake"]
outcome = validate_cohort(load_settings(snakemake.params.settings, "validate"), ".")
report_dir = Path(snakemake.log.report_md).parent
write_validation_report(outcome, report_dir)
message = outcome_message(outcome, report_dir)
if message:
    print(message, file=sys.stderr)
if not outcome.ok:
    sys.exit(1)
write_clean_tables(outcome, Path(snakemake.output.flow).parent)
Path(snakemake.output.flow).write_text(json.dumps(outcome.flow, indent=2, sort_keys=True) + "\n")
