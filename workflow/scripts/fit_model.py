"""Snakemake entry point: fit one configured model (recurstudy.models does the work)."""

import logging

from recurstudy.io import read_parquet
from recurstudy.models import fit_spec, write_result
from recurstudy.settings import spec_from_settings

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
spec = spec_from_settings(snakemake.params.spec)
data = {key: read_parquet(path) for key, path in snakemake.input.items()}
result = fit_spec(spec, data)
write_result(result, snakemake.output.table, snakemake.output.extras)
logging.info("%s (%s): converged=%s %s", spec.name, spec.kind, result.converged, result.message)
