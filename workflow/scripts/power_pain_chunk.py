"""Snakemake entry point: one chunk of a pain claim's power replicates, simulated from the
claim's fitted pain model (means by arm and week, variance components) and refitted."""

import json
import logging
from pathlib import Path

import pandas as pd

from recurstudy.models import write_csv
from recurstudy.power import (
    PAIN_COLUMNS,
    cohort_design,
    pain_design_from_fit,
    simulate_pain_from_inputs,
)

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
params = snakemake.params
inputs = json.loads(params.inputs)
arms = inputs["spec"]["arms"]
design = cohort_design(pd.read_parquet(snakemake.input.participants), arms)
fit = Path(snakemake.input.fit)
tables = [fit / "percent_change.csv", fit / "variance_components.csv"]
if not all(t.exists() for t in tables):
    # The claim's pain model was not estimated (no pain table, or its fit failed): nothing to
    # simulate from. No replicates; the power summary says so, the claim is not estimable.
    write_csv(pd.DataFrame(columns=PAIN_COLUMNS), snakemake.output[0])
    logging.info("no pain replicates: the pain model was not estimated (no %s)", tables[0].name)
else:
    pain = pain_design_from_fit(pd.read_csv(tables[0]), pd.read_csv(tables[1]), arms)
    first = int(snakemake.wildcards.chunk) * params.chunk_size
    chunk = range(first, min(first + params.chunk_size, params.replicates))
    reps = simulate_pain_from_inputs(inputs, design, pain, chunk, params.seed)
    write_csv(reps, snakemake.output[0])
    logging.info("%d pain replicates, %d converged", len(reps), int(reps["converged"].sum()))
