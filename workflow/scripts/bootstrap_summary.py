"""Snakemake entry point: one model's bootstrap intervals beside its own (recurstudy.bootstrap)."""

import logging

import pandas as pd

from recurstudy.bootstrap import jackknife, summarize_bootstrap
from recurstudy.models import write_csv
from recurstudy.settings import spec_from_settings

snakemake = globals()["snakemake"]
logging.basicConfig(filename=snakemake.log[0], level=logging.INFO, format="%(message)s")
params = snakemake.params
spec = spec_from_settings(params.spec)
reps = pd.concat([pd.read_csv(p) for p in snakemake.input.chunks], ignore_index=True)
reps = reps.sort_values("replicate", kind="mergesort").reset_index(drop=True)
table = pd.read_csv(snakemake.input.table)
row = table[table["term"] == spec.intervention_term]
converged = not row.empty and bool(row["converged"].iloc[0])
# A model that did not converge on the full data keeps its row (no estimate, no interval): the
# replicates' percentile interval is still shown, the BCa (which needs the estimate) is not.
tidy = (
    row.iloc[0].to_dict()
    if converged
    else dict.fromkeys(("estimate", "std_error", "conf_low", "conf_high"), float("nan"))
)
data = {
    key: pd.read_parquet(path)
    for key, path in snakemake.input.items()
    if key not in ("chunks", "table")
}
jack = jackknife(spec, data) if params.bca and converged else None
out = summarize_bootstrap(spec.name, reps, tidy, params.seed, jack)
write_csv(out, snakemake.output[0])
logging.info("%s\n%s", spec.name, out.to_string(index=False))
