"""Analysis datasets derived from the validated cohort tables.

- ``first_episode``: one row per participant, days to the first episode or censoring.
- ``counting_process``: R survival's (start, stop] layout, one row per at-risk interval: interval
  k ends at the k-th onset (event = 1) and the last interval is censored at ``followup_end``.
  ``episode`` numbers the interval (the stratum of Prentice-Williams-Peterson models) and
  ``gap`` is ``stop - start`` (the gap-time scale).
- ``counts``: one row per participant, number of episodes and exposure days.

Times are whole days since enrolment. With ``exclude_episode_time`` the days inside an episode
(onset to resolution) are not at risk: the next interval starts when the episode resolved, and an
unresolved episode ends the participant's time at risk. All operations are vectorised over rows
(sorting, shifting within groups), so they scale to millions of participants.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

ID = "participant_id"


def _covariate_columns(config: dict) -> list[str]:
    return [c for c in config.get("covariates", {}) if c not in (ID, "arm")]


def _arm_categorical(arm: pd.Series, config: dict) -> pd.Categorical:
    arms = config.get("arms", {"control": "control", "intervention": "intervention"})
    return pd.Categorical(arm, categories=[arms["control"], arms["intervention"]])


def _base(participants: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Participant-level columns shared by every dataset: id, arm (control first), covariates."""
    cols = [ID, "arm", *_covariate_columns(config)]
    base = participants[cols].copy()
    base["arm"] = _arm_categorical(base["arm"], config)
    return base


def _days(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    return ((later - earlier) / np.timedelta64(1, "D")).to_numpy()


def counting_process(
    participants: pd.DataFrame, episodes: pd.DataFrame, config: dict
) -> pd.DataFrame:
    """At-risk intervals (start, stop] in days since enrolment, one row per interval."""
    exclude = bool(config.get("exclude_episode_time", False))
    p = participants[[ID, "enrolled_on", "followup_end"]]
    ep = episodes[[ID, "onset_on", "resolved_on"]].merge(p, on=ID, how="inner", validate="m:1")
    ep = ep.sort_values([ID, "onset_on"], kind="mergesort").reset_index(drop=True)
    onset = _days(ep["onset_on"], ep["enrolled_on"])
    fu = _days(ep["followup_end"], ep["enrolled_on"])
    # An unresolved episode (or one resolving after follow-up) lasts until follow-up ends.
    resolved = np.fmin(np.nan_to_num(_days(ep["resolved_on"], ep["enrolled_on"]), nan=np.inf), fu)
    number = ep.groupby(ID, sort=False).cumcount().to_numpy() + 1
    first = number == 1
    prev_onset = np.where(first, 0.0, np.roll(onset, 1))
    if exclude:
        prev_res = np.where(first, 0.0, np.roll(resolved, 1))
        # An episode beginning on or before the day the previous one resolved keeps one day at
        # risk, so that every interval has positive length.
        start = np.where(first, 0.0, np.maximum(prev_onset, np.minimum(prev_res, onset - 1)))
    else:
        start = prev_onset
    events = pd.DataFrame(
        {ID: ep[ID].to_numpy(), "episode": number, "start": start, "stop": onset, "event": 1}
    )

    # The censored tail: from the last onset (or its resolution) to the end of follow-up.
    last = ep.groupby(ID, sort=False).tail(1)
    li = last.index.to_numpy()
    tails = participants[[ID, "enrolled_on", "followup_end"]].copy()
    tails["stop"] = _days(tails["followup_end"], tails["enrolled_on"])
    tail_start = pd.Series(resolved[li] if exclude else onset[li], index=last[ID].to_numpy())
    n_prev = pd.Series(number[li], index=last[ID].to_numpy())
    tails["start"] = tails[ID].map(tail_start).fillna(0.0).to_numpy()
    tails["episode"] = tails[ID].map(n_prev).fillna(0).astype(int).to_numpy() + 1
    tails["event"] = 0
    tails = tails.loc[tails["stop"] > tails["start"], [ID, "episode", "start", "stop", "event"]]

    cp = pd.concat([events, tails], ignore_index=True)
    cp = cp.sort_values([ID, "episode"], kind="mergesort").reset_index(drop=True)
    cp["start"] = cp["start"].astype(np.int64)
    cp["stop"] = cp["stop"].astype(np.int64)
    cp["gap"] = cp["stop"] - cp["start"]
    cp["event"] = cp["event"].astype(np.int64)
    cp["episode"] = cp["episode"].astype(np.int64)
    out = _base(participants, config).merge(cp, on=ID, how="inner", validate="1:m")
    return out[[ID, "arm", *_covariate_columns(config), "episode", "start", "stop", "gap", "event"]]


def first_episode(participants: pd.DataFrame, episodes: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Days from enrolment to the first episode (event = 1) or to the end of follow-up (0)."""
    first_onset = episodes.groupby(ID, sort=False)["onset_on"].min()
    out = _base(participants, config)
    onset = participants[ID].map(first_onset)
    event = onset.notna().to_numpy()
    end = onset.where(event, participants["followup_end"])
    out["time"] = _days(end, participants["enrolled_on"]).astype(np.int64)
    out["event"] = event.astype(np.int64)
    return out.sort_values(ID, kind="mergesort").reset_index(drop=True)


def counts(
    participants: pd.DataFrame, episodes: pd.DataFrame, config: dict, cp: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Episodes per participant and exposure days (the at-risk time of the counting process)."""
    if cp is None:
        cp = counting_process(participants, episodes, config)
    out = _base(participants, config)
    n = episodes.groupby(ID, sort=False).size()
    exposure = cp.groupby(ID, sort=False)["gap"].sum()
    out["n_episodes"] = out[ID].map(n).fillna(0).astype(np.int64).to_numpy()
    out["exposure_days"] = out[ID].map(exposure).fillna(0).astype(np.int64).to_numpy()
    return out.sort_values(ID, kind="mergesort").reset_index(drop=True)


def derive_all(
    participants: pd.DataFrame,
    episodes: pd.DataFrame,
    config: dict,
    names: tuple[str, ...] = ("first_episode", "counting_process", "counts"),
) -> dict[str, pd.DataFrame]:
    """The analysis datasets in `names` (all three by default), the counting process once."""
    out: dict[str, pd.DataFrame] = {}
    if "first_episode" in names:
        out["first_episode"] = first_episode(participants, episodes, config)
    if "counting_process" in names or "counts" in names:
        cp = counting_process(participants, episodes, config)
        if "counting_process" in names:
            out["counting_process"] = cp
        if "counts" in names:
            out["counts"] = counts(participants, episodes, config, cp=cp)
    return out


DATASETS = {
    "first_episode": first_episode,
    "counting_process": counting_process,
    "counts": counts,
}


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write a frame to Parquet deterministically (no index, no pandas timestamps in metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def read_clean(clean_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read the validated tables written by the validation stage."""
    clean_dir = Path(clean_dir)
    tables = {}
    for name in ("participants", "episodes", "pain_scores"):
        path = clean_dir / f"{name}.parquet"
        if path.exists():
            tables[name] = pd.read_parquet(path)
    return tables


def main_derive(config_path: str, clean_dir: str, outdir: str) -> int:
    """CLI: derive every analysis dataset from validated tables into `outdir`."""
    from recurstudy.config import load_config

    config = load_config(config_path)
    tables = read_clean(clean_dir)
    if "participants" not in tables or "episodes" not in tables:
        print(
            f"recurstudy: no validated tables in {clean_dir}; run validation first", file=sys.stderr
        )
        return 1
    for name, df in derive_all(tables["participants"], tables["episodes"], config).items():
        write_parquet(df, Path(outdir) / f"{name}.parquet")
    return 0
