"""The ranking of result rows: one order, used by the engine, the workers and the results pages.

Rows are ordered by ``rank_by`` in its better direction (`metrics.metric_direction`), a NaN
score last, ties broken by the global column index (ascending) — so the order is total and
the same however the table was split. Per-partition top-n candidates merge into the global
top-n (`merge_top`, associative: a tree reduction gives the same answer as a full sort).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .metrics import metric_direction


def sort_keys(df: pd.DataFrame, rank_by: str) -> tuple[np.ndarray, np.ndarray]:
    """(primary, secondary) keys, both ascending: −score (NaN → +inf) and the column index."""
    score = df[rank_by].to_numpy(dtype=np.float64) * metric_direction(rank_by)
    primary = np.where(np.isnan(score), np.inf, -score)
    return primary, df["column"].to_numpy(dtype=np.int64)


def rank_sorted(df: pd.DataFrame, rank_by: str) -> pd.DataFrame:
    """``df`` in rank order (index reset)."""
    primary, column = sort_keys(df, rank_by)
    return df.iloc[np.lexsort((column, primary))].reset_index(drop=True)


def top_n(df: pd.DataFrame, rank_by: str, n: int) -> pd.DataFrame:
    """The best ``n`` rows of ``df`` in rank order."""
    if len(df) > 4 * n:  # partial selection first, then an exact sort of the few kept
        primary, _ = sort_keys(df, rank_by)
        cut = np.partition(primary, n - 1)[n - 1] if n > 0 else -np.inf
        df = df[primary <= cut]
    return rank_sorted(df, rank_by).head(n)


def merge_top(parts: Sequence[pd.DataFrame], rank_by: str, n: int) -> pd.DataFrame:
    """The best ``n`` rows of the union of ``parts`` (each any order)."""
    given = [p for p in parts if p is not None]
    full = [p for p in given if len(p)]
    if not full:
        return given[0].iloc[:0].reset_index(drop=True) if given else pd.DataFrame()
    return top_n(pd.concat(full, ignore_index=True), rank_by, n)
