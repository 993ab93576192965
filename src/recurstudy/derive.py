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
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from recurstudy.contract import ARM, ID, TABLES, arm_labels
from recurstudy.contract import DATASETS as DATASET_NAMES
from recurstudy.io import is_ascending, positions, read_parquet


def _covariate_columns(config: dict) -> list[str]:
    return [c for c in config.get("covariates", {}) if c not in (ID, ARM)]


def _arm_categorical(arm: pd.Series, config: dict) -> pd.Categorical:
    return pd.Categorical(arm, categories=list(arm_labels(config)))


def _base(participants: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Participant-level columns shared by every dataset: id, arm (control first), covariates."""
    cols = [ID, ARM, *_covariate_columns(config)]
    base = participants[cols].copy(deep=False)  # the selection is a copy already
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
    risk begins (``entry``: the latest resolution + washout of an episode under way, else 0).

    Participants are addressed by their row position in ``participants`` (``pos``), never by the
    id string: every grouping and lookup is an integer operation (``np.bincount``,
    ``np.maximum.at``, fancy indexing). Grouping and mapping on the object-dtype id column
    (hash tables, uniqueness checks, string sorts) took most of the derive time at 1M
    participants (benchmarks/run.py).
    """

    def __init__(self, participants: pd.DataFrame, episodes: pd.DataFrame, config: dict):
        self.exclude, self.washout = at_risk_rules(config)
        n = len(participants)
        enrolled = participants["enrolled_on"].to_numpy(dtype="datetime64[ns]")
        self.fu_days = _days_np(participants["followup_end"].to_numpy("datetime64[ns]"), enrolled)
        pos = positions(participants[ID], episodes[ID])
        known = pos >= 0  # episodes of unknown participants (rejected by validation) are ignored
        pos = pos[known]
        onset_on = episodes["onset_on"].to_numpy(dtype="datetime64[ns]")[known]
        if "resolved_on" in episodes.columns:
            resolved_on = episodes["resolved_on"].to_numpy(dtype="datetime64[ns]")[known]
        else:  # an absent column: every episode unresolved
            resolved_on = np.full(pos.size, np.datetime64("NaT"), dtype="datetime64[ns]")
        if not in_pair_order(pos, onset_on):  # validated tables come sorted: no sort needed
            order = np.lexsort((onset_on, pos))  # by participant, then onset (stable)
            pos, onset_on, resolved_on = pos[order], onset_on[order], resolved_on[order]
        onset = _days_np(onset_on, enrolled[pos])
        fu = self.fu_days[pos]
        # An unresolved episode (or one resolving after follow-up) lasts until follow-up ends.
        resolved = np.fmin(np.nan_to_num(_days_np(resolved_on, enrolled[pos]), nan=np.inf), fu)
        prevalent = onset <= 0
        # At risk from the latest resolution (+ washout) of the episodes under way at enrolment.
        ends = np.full(n, -np.inf)
        np.maximum.at(
            ends, pos[prevalent], np.minimum(resolved[prevalent] + self.washout, fu[prevalent])
        )
        self.entry = np.where(np.isneginf(ends), 0.0, ends)
        keep = ~prevalent
        self.pos = pos[keep]
        self.onset = onset[keep]
        self.resolved = resolved[keep]

    def intervals(self) -> pd.DataFrame:
        """The (start, stop] rows, in participant then episode order: one per episode after
        enrolment (event) and a censored tail; ``pos`` is the participant's row position."""
        pos, onset, resolved = self.pos, self.onset, self.resolved
        n = self.fu_days.size
        first = np.ones(pos.size, dtype=bool)
        first[1:] = pos[1:] != pos[:-1]
        # 1-based number of each episode within its participant
        group_start = np.flatnonzero(first)
        sizes = np.diff(np.append(group_start, pos.size))
        number = np.arange(pos.size) - np.repeat(group_start, sizes) + 1
        entry = self.entry[pos]
        prev_onset = np.where(first, 0.0, np.roll(onset, 1))
        ended = resolved + self.washout if self.exclude else onset
        prev_end = np.where(first, entry, np.roll(ended, 1))
        start = np.maximum(prev_onset, np.minimum(prev_end, onset - 1))

        # The censored tail: from the last onset (or its resolution + washout, or the entry) to
        # the end of follow-up, when that leaves time at risk.
        last = np.ones(pos.size, dtype=bool)
        last[:-1] = pos[1:] != pos[:-1]
        tail_start = self.entry.copy()
        tail_start[pos[last]] = ended[last]
        n_prev = np.zeros(n, dtype=np.int64)
        n_prev[pos[last]] = number[last]
        tail = self.fu_days > tail_start
        tail_pos = np.flatnonzero(tail)
        all_pos = np.concatenate([pos, tail_pos])
        all_episode = np.concatenate([number, n_prev[tail_pos] + 1])
        # The same order as np.lexsort((all_episode, all_pos)): both halves are sorted by `pos`
        # and a tail is numbered after its participant's episodes, so a stable sort on `pos`
        # (timsort: one merge of two runs) suffices; 3.6M rows: 0.45 s -> 0.05 s.
        order = np.argsort(all_pos, kind="stable")
        return pd.DataFrame(
            {
                "pos": all_pos[order],
                "episode": all_episode[order].astype(np.int64),
                "start": np.concatenate([start, tail_start[tail_pos]])[order].astype(np.int64),
                "stop": np.concatenate([onset, self.fu_days[tail_pos]])[order].astype(np.int64),
                "event": np.concatenate(
                    [np.ones(pos.size, np.int64), np.zeros(tail_pos.size, np.int64)]
                )[order],
            }
        )


def in_pair_order(major: np.ndarray, minor: np.ndarray) -> bool:
    """Rows already in the order of ``np.lexsort((minor, major))`` (a NaT tie never counts as
    in order): an O(n) check that spares the O(n log n) lexsort (0.4 s for 2.6M episodes) on
    validated tables, which are written sorted."""
    if major.size < 2:
        return True
    step = major[1:] - major[:-1]
    return bool(((step > 0) | ((step == 0) & (minor[1:] >= minor[:-1]))).all())


def _days_np(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    return (later - earlier) / np.timedelta64(1, "D")


def _by_id(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in participant-id order (stable); the validated table usually is already."""
    if is_ascending(df[ID]):
        if df.index.equals(pd.RangeIndex(len(df))):
            return df  # reset_index would copy every column for the same frame
        return df.reset_index(drop=True)
    return df.sort_values(ID, kind="mergesort").reset_index(drop=True)


def counting_process(
    participants: pd.DataFrame, episodes: pd.DataFrame, config: dict
) -> pd.DataFrame:
    """At-risk intervals (start, stop] in days since enrolment, one row per interval."""
    iv = _Layout(participants, episodes, config).intervals()
    return _counting_process_frame(participants, iv, config)


def _counting_process_frame(
    participants: pd.DataFrame, iv: pd.DataFrame, config: dict, base: pd.DataFrame | None = None
) -> pd.DataFrame:
    base = _base(participants, config) if base is None else base
    pos = iv["pos"].to_numpy()
    # Column by column into an empty frame: no block is consolidated (copied) afterwards, as
    # taking rows with iloc and selecting the columns at the end did (3.6M rows: 0.55 s ->
    # 0.37 s; pd.DataFrame(dict) was slower still, 0.6-2 s).
    # The terminal event (death) ends the participant's last interval: flag it there.
    last = np.ones(pos.size, dtype=bool)
    last[:-1] = pos[1:] != pos[:-1]
    terminal = np.where(last, terminal_flags(participants, config)[pos], 0).astype(np.int64)
    out = pd.DataFrame(index=pd.RangeIndex(pos.size))
    with warnings.catch_warnings():  # pandas' advice to consolidate, past ~100 covariates
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        for c in base.columns:
            out[c] = base[c].array.take(pos)
        out["episode"] = iv["episode"].to_numpy()
        out["start"] = iv["start"].to_numpy()
        out["stop"] = iv["stop"].to_numpy()
        out["gap"] = out["stop"] - out["start"]
        out["event"] = iv["event"].to_numpy()
        out["terminal"] = terminal
    # participants in id order, then episode; rows follow the participants' order, so ids
    # sorted there (as validated tables are) are sorted here
    if not (participants[ID].is_monotonic_increasing or out[ID].is_monotonic_increasing):
        out = out.sort_values([ID, "episode"], kind="mergesort").reset_index(drop=True)
    return out


def first_episode(participants: pd.DataFrame, episodes: pd.DataFrame, config: dict) -> pd.DataFrame:
    """Days from enrolment to the first episode (event = 1) or to the end of follow-up (0), and
    ``entry``, the day the participant becomes at risk (the start of their first interval).

    ``entry`` is 0 except after an episode under way at enrolment: its resolution (+ washout),
    or the day before the first onset if that falls earlier. A participant who is never at risk
    has ``entry == time`` (no time at risk; the survival models leave the row out).
    """
    return _first_episode_frame(participants, _Layout(participants, episodes, config), config)


def _first_episode_frame(
    participants: pd.DataFrame, layout: _Layout, config: dict, base: pd.DataFrame | None = None
) -> pd.DataFrame:
    onset = np.full(len(participants), np.nan)
    first = np.ones(layout.pos.size, dtype=bool)
    first[1:] = layout.pos[1:] != layout.pos[:-1]
    onset[layout.pos[first]] = layout.onset[first]
    out = _base(participants, config) if base is None else base.copy(deep=False)
    event = ~np.isnan(onset)
    time = np.where(event, onset, layout.fu_days)
    out["time"] = time.astype(np.int64)
    out["event"] = event.astype(np.int64)
    entry = np.minimum(layout.entry, np.where(event, time - 1, time))
    out["entry"] = np.maximum(entry, 0).astype(np.int64)
    return _by_id(out)


def counts(
    participants: pd.DataFrame, episodes: pd.DataFrame, config: dict, cp: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Episodes after enrolment per participant and exposure days, the counting process's total
    time at risk (episode time and washouts excluded as configured)."""
    if cp is None:
        return _counts_frame(
            participants, _Layout(participants, episodes, config).intervals(), config
        )
    # the counting process of these participants, already derived
    iv = pd.DataFrame(
        {"pos": positions(participants[ID], cp[ID]), **cp[["event", "start", "stop"]]}
    )
    return _counts_frame(participants, iv, config)


def _counts_frame(
    participants: pd.DataFrame, iv: pd.DataFrame, config: dict, base: pd.DataFrame | None = None
) -> pd.DataFrame:
    n = len(participants)
    pos = iv["pos"].to_numpy()
    events = iv["event"].to_numpy()
    gap = (iv["stop"] - iv["start"]).to_numpy()
    out = _base(participants, config) if base is None else base.copy(deep=False)
    out["n_episodes"] = np.bincount(pos, weights=events, minlength=n).astype(np.int64)
    out["exposure_days"] = np.bincount(pos, weights=gap, minlength=n).astype(np.int64)
    out["terminal"] = terminal_flags(participants, config)
    return _by_id(out)


def derive_all(
    participants: pd.DataFrame,
    episodes: pd.DataFrame,
    config: dict,
    names: tuple[str, ...] = DATASET_NAMES,
) -> dict[str, pd.DataFrame]:
    """The analysis datasets in `names` (all three by default), the counting process once."""
    out: dict[str, pd.DataFrame] = {}
    layout = _Layout(participants, episodes, config)
    base = _base(participants, config)  # once: each frame adds its columns to a shallow copy
    if "first_episode" in names:
        out["first_episode"] = _first_episode_frame(participants, layout, config, base)
    if "counting_process" in names or "counts" in names:
        iv = layout.intervals()
        if "counting_process" in names:
            out["counting_process"] = _counting_process_frame(participants, iv, config, base)
        if "counts" in names:
            out["counts"] = _counts_frame(participants, iv, config, base)
    return out


DATASETS = dict(zip(DATASET_NAMES, (first_episode, counting_process, counts), strict=True))


def write_parquet(df: pd.DataFrame, path: str | Path) -> None:
    """Write a frame to Parquet deterministically (no index, no pandas timestamps in metadata)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")


def write_datasets(frames: Mapping[str, pd.DataFrame], paths: Mapping[str, str | Path]) -> None:
    """Write each derived dataset to its path (:func:`write_parquet`), the files side by side:
    Arrow encodes and compresses outside the GIL, and at 630k participants the three files took
    1.7 s one after another and 1.1 s together on 2 cores (benchmarks/run.py, the cgd case)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(frames) or 1) as pool:
        futures = [pool.submit(write_parquet, df, paths[name]) for name, df in frames.items()]
        for future in futures:
            future.result()  # a failed write raises here


def read_clean(clean_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read the validated tables written by the validation stage."""
    clean_dir = Path(clean_dir)
    tables = {}
    for name in TABLES:
        path = clean_dir / f"{name}.parquet"
        if path.exists():
            tables[name] = read_parquet(path)
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
    frames = derive_all(tables["participants"], tables["episodes"], config)
    write_datasets(frames, {name: Path(outdir) / f"{name}.parquet" for name in frames})
    return 0
