"""Snakemake entry point: one chunk of participant-bootstrap replicates (recurstudy.bootstrap)."""

import logging

import pandas as pd

from recurstudy.bootstrap import bootstrap_chunk
from recurstudy.models import write_csv
from recurstudy.settings import spec_from_settings

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
params = snakemake.params
spec = spec_from_settings(params.spec)
data = {key: pd.read_parquet(path) for key, path in snakemake.input.items()}
first = int(snakemake.wildcards.chunk) * params.chunk_size
chunk = range(first, min(first + params.chunk_size, params.replicates))
reps = bootstrap_chunk(spec, data, chunk, params.seed)
write_csv(reps, snakemake.output[0])
logging.info("%s: %d replicates, %d converged", spec.name, len(reps), int(reps["converged"].sum()))
