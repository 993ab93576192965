"""Snakemake entry point: whether this run's analysis matches the locked plan (recurstudy.plan)."""

import json
from pathlib import Path

from recurstudy import plan
from recurstudy.settings import load_settings

snakemake = globals()["snakemake"]
settings = load_settings(snakemake.params.settings, "plan")
path = snakemake.input[0] if len(snakemake.input) else None
status = plan.status(settings, path)
Path(snakemake.output[0]).write_text(json.dumps(status, indent=2, sort_keys=True) + "\n")
