"""Analysis datasets derived from the validated cohort tables.

- ``first_episode``: one row per participant, days to the first episode or censoring (``time``,
  ``event``) and ``entry``, the day the participant first is at risk (delayed entry: 0 except
  after an episode under way at enrolment).
- ``counting_process``: R survival's (start, stop] layout, one row per at-risk interval: interval
  k ends at the k-th onset (event = 1) and the last interval is censored at ``followup_end``.
  ``episode`` numbers the interval (the stratum of Prentice-Williams-Peterson models) and
  ``gap`` is ``stop - start`` (the gap-time scale).
- ``counts``: one row per participant, number of episodes and exposure days (the counting
  process's total at-risk time).
- ``terminal`` (on ``counts`` and on the last ``counting_process`` interval of each participant,
  0 elsewhere): 1 when follow-up ended by a terminal event (``end_reason`` among the config's
  ``terminal_events``, default death): no episode can follow it (the Ghosh-Lin model's terminal
  event; every other model treats it as censoring).

Times are whole days since enrolment; an interval (start, stop] is at risk on days start + 1 to
stop. The rules of time at risk:

- An episode under way at enrolment (``onset_on <= enrolled_on < resolved_on``) is not an event;
  the participant is at risk from its resolution (plus the washout), so the first interval starts
  there and ``first_episode`` has that day as ``entry``.
- With ``exclude_episode_time`` the days inside an episode (onset to resolution) are not at risk:
  the next interval starts when the episode resolved, and an unresolved episode ends the
  participant's time at risk.
- ``washout_days: N`` (implies ``exclude_episode_time``): after each episode resolves the
  participant is not at risk for N more days; the next interval starts at resolution + N.
  Follow-up that ends inside a washout simply ends (no interval of zero or negative length).
- An episode beginning inside the previous episode or its washout (or, for the first, inside the
  episode under way at enrolment) keeps one day at risk, (onset - 1, onset], so that every
  interval has positive length.

All operations are vectorised over rows (sorting, shifting within groups), so they scale to
millions of participants.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from recurstudy.contract import ARM, ID, TABLES, arm_labels
from recurstudy.contract import DATASETS as DATASET_NAMES


def _covariate_columns(config: dict) -> list[str]:
    return [c for c in config.get("covariates", {}) if c not in (ID, ARM)]


def _arm_categorical(arm: pd.Series, config: dict) -> pd.Categorical:
    return pd.Categorical(arm, categories=list(arm_labels(config)))


def _base(participants: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Participant-level columns shared by every dataset: id, arm (control first), covariates."""
    cols = [ID, ARM, *_covariate_columns(config)]
    base = participants[cols].copy()
    base[ARM] = _arm_categorical(base[ARM], config)
    return base


def terminal_flags(participants: pd.DataFrame, config: dict) -> np.ndarray:
    """1 for each participant whose follow-up ended by a terminal event (``end_reason`` among the
    config's ``terminal_events``, default death), else 0; 0 for all without an end_reason
    column."""
    from recurstudy.config import terminal_events

    if "end_reason" not in participants.columns:
        return np.zeros(len(participants), dtype=np.int64)
    terminal = set(terminal_events(config))
    return participants["end_reason"].isin(terminal).to_numpy().astype(np.int64)


def _days(later: pd.Series, earlier: pd.Series) -> np.ndarray:
    return ((later - earlier) / np.timedelta64(1, "D")).to_numpy()


def at_risk_rules(config: dict) -> tuple[bool, int]:
    """(episode time excluded from the time at risk, washout days after each resolution).

    ``washout_days > 0`` implies ``exclude_episode_time``.
    """
    washout = int(config.get("washout_days") or 0)
    if washout < 0:
        raise ValueError(f"washout_days must be >= 0, not {washout}")
    return bool(config.get("exclude_episode_time", False)) or washout > 0, washout


class _Layout:
    """Each participant's episodes in days since enrolment, split into those under way at
    enrolment (not events) and those after it (events), and the day each participant's time at
    risk begins (``entry``: the latest resolution + washout of an episode under way, else 0)."""

    def __init__(self, participants: pd.DataFrame, episodes: pd.DataFrame, config: dict):
        self.exclude, self.washout = at_risk_rules(config)
        p = participants[[ID, "enrolled_on", "followup_end"]]
        cols = [ID, "onset_on", *(["resolved_on"] if "resolved_on" in episodes.columns else [])]
        ep = episodes[cols].merge(p, on=ID, how="inner", validate="m:1")
        if "resolved_on" not in ep.columns:  # an absent column: every episode unresolved
            ep["resolved_on"] = pd.Series(pd.NaT, index=ep.index, dtype="datetime64[ns]")
        ep = ep.sort_values([ID, "onset_on"], kind="mergesort").reset_index(drop=True)
        onset = _days(ep["onset_on"], ep["enrolled_on"])
        fu = _days(ep["followup_end"], ep["enrolled_on"])
        # An unresolved episode (or one resolving after follow-up) lasts until follow-up ends.
        resolved = np.fmin(
            np.nan_to_num(_days(ep["resolved_on"], ep["enrolled_on"]), nan=np.inf), fu
        )
        prevalent = onset <= 0
        # At risk from the latest resolution (+ washout) of the episodes under way at enrolment.
        ends = pd.Series(np.minimum(resolved[prevalent] + self.washout, fu[prevalent]))
        entry = ends.groupby(ep[ID].to_numpy()[prevalent]).max()
        self.entry = participants[ID].map(entry).fillna(0.0).to_numpy(dtype=float)
        self.entry_by_id = pd.Series(self.entry, index=participants[ID].to_numpy())
        keep = ~prevalent
        self.ids = ep[ID].to_numpy()[keep]
        self.onset = onset[keep]
        self.resolved = resolved[keep]
        self.fu_days = _days(participants["followup_end"], participants["enrolled_on"])

    def intervals(self, participants: pd.DataFrame) -> pd.DataFrame:
        """The (start, stop] rows: one per episode after enrolment (event) and a censored tail."""
        ids, onset, resolved = self.ids, self.onset, self.resolved
        ids_s = pd.Series(ids)
        number = ids_s.groupby(ids, sort=False).cumcount().to_numpy() + 1
        first = number == 1
        entry = ids_s.map(self.entry_by_id).to_numpy(dtype=float) if len(ids) else np.zeros(0)
        prev_onset = np.where(first, 0.0, np.roll(onset, 1))
        ended = resolved + self.washout if self.exclude else onset
        prev_end = np.where(first, entry, np.roll(ended, 1))
        start = np.maximum(prev_onset, np.minimum(prev_end, onset - 1))
        events = pd.DataFrame({ID: ids, "episode": number, "start": start, "stop": onset})
        events["event"] = 1

        # The censored tail: from the last onset (or its resolution + washout, or the entry) to
        # the end of follow-up, when that leaves time at risk.
        last = ~np.append(ids[1:] == ids[:-1], False) if len(ids) else np.zeros(0, dtype=bool)
        tail_start = pd.Series(ended[last], index=ids[last])
        n_prev = pd.Series(number[last], index=ids[last])
        tails = pd.DataFrame({ID: participants[ID].to_numpy(), "stop": self.fu_days})
        tails["start"] = tails[ID].map(tail_start).fillna(pd.Series(self.entry)).to_numpy()
        tails["episode"] = tails[ID].map(n_prev).fillna(0).astype(int).to_numpy() + 1
        tails["event"] = 0
        tails = tails.loc[tails["stop"] > tails["start"], [ID, "episode", "start", "stop", "event"]]
        return pd.concat([events, tails], ignore_index=True)


def counting_process(
    participants: pd.DataFrame, episodes: pd.DataFrame, config: dict
) -> pd.DataFrame:
    """At-risk intervals (start, stop] in days since enrolment, one row per interval."""
    cp = _Layout(participants, episodes, config).intervals(participants)
    cp = cp.sort_values([ID, "episode"], kind="mergesort").reset_index(drop=True)
    cp["start"] = cp["start"].astype(np.int64)
    cp["stop"] = cp["stop"].astype(np.int64)
    cp["gap"] = cp["stop"] - cp["start"]
    cp["event"] = cp["event"].astype(np.int64)
    cp["episode"] = cp["episode"].astype(np.int64)
    out = _base(participants, config).merge(cp, on=ID, how="inner", validate="1:m")
    # The terminal event (death) ends the participant's last interval: flag it there.
    flags = pd.Series(terminal_flags(participants, config), index=participants[ID].to_numpy())
    last = ~out[ID].duplicated(keep="last").to_numpy()
    out["terminal"] = np.where(last, out[ID].map(flags).to_numpy(), 0).astype(np.int64)
    cols = [ID, ARM, *_covariate_columns(config), "episode", "start", "stop", "gap", "event"]
    return out[[*cols, "terminal"]]


def first_episode(participants: pd.DataFrame, episodes: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Days from enrolment to the first episode (event = 1) or to the end of follow-up (0), and
    ``entry``, the day the participant becomes at risk (the start of their first interval).

    ``entry`` is 0 except after an episode under way at enrolment: its resolution (+ washout),
    or the day before the first onset if that falls earlier. A participant who is never at risk
    has ``entry == time`` (no time at risk; the survival models leave the row out).
    """
    layout = _Layout(participants, episodes, config)
    first = pd.Series(layout.onset).groupby(layout.ids, sort=False).first()
    out = _base(participants, config)
    onset = participants[ID].map(first).to_numpy(dtype=float)
    event = ~np.isnan(onset)
    time = np.where(event, onset, layout.fu_days)
    out["time"] = time.astype(np.int64)
    out["event"] = event.astype(np.int64)
    entry = np.minimum(layout.entry, np.where(event, time - 1, time))
    out["entry"] = np.maximum(entry, 0).astype(np.int64)
    return out.sort_values(ID, kind="mergesort").reset_index(drop=True)


def counts(
    participants: pd.DataFrame, episodes: pd.DataFrame, config: dict, cp: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Episodes after enrolment per participant and exposure days, the counting process's total
    time at risk (episode time and washouts excluded as configured)."""
    if cp is None:
        cp = counting_process(participants, episodes, config)
    out = _base(participants, config)
    n = cp.groupby(ID, sort=False)["event"].sum()
    exposure = cp.groupby(ID, sort=False)["gap"].sum()
    out["n_episodes"] = out[ID].map(n).fillna(0).astype(np.int64).to_numpy()
    out["exposure_days"] = out[ID].map(exposure).fillna(0).astype(np.int64).to_numpy()
    out["terminal"] = terminal_flags(participants, config)
    return out.sort_values(ID, kind="mergesort").reset_index(drop=True)


def derive_all(
    participants: pd.DataFrame,
    episodes: pd.DataFrame,
    config: dict,
    names: tuple[str, ...] = DATASET_NAMES,
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


DATASETS = dict(zip(DATASET_NAMES, (first_episode, counting_process, counts), strict=True))


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
    for name in TABLES:
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
