"""Result pieces: the k-way merge of ranked pieces equals one global ranking, pages and
re-sorted pages equal slicing the full table, and the top-n tree reduction equals a full sort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpu_backtest.core import artifacts
from gpu_backtest.core.ranking import merge_top, rank_sorted


def _table(rng: np.random.Generator, n: int, ties: bool) -> pd.DataFrame:
    sharpe = rng.normal(size=n)
    if ties:
        sharpe = np.round(sharpe, 1)
    sharpe[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"column": rng.permutation(n).astype(np.int64),
                         "symbol": [f"S{i % 7}" for i in range(n)],
                         "fast": rng.integers(1, 50, n), "sharpe": sharpe,
                         "max_drawdown": rng.uniform(-0.5, 0, n)})


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(0, 400), n_pieces=st.integers(1, 9), batch=st.integers(1, 70),
       ties=st.booleans(), rank_by=st.sampled_from(["sharpe", "max_drawdown"]))
def test_merged_pieces_equal_global_ranking(tmp_path_factory, seed, n, n_pieces, batch, ties, rank_by) -> None:
    rng = np.random.default_rng(seed)
    table = _table(rng, n, ties)
    loc = str(tmp_path_factory.mktemp("art"))
    cuts = np.sort(rng.integers(0, n + 1, n_pieces - 1)) if n_pieces > 1 else np.array([], int)
    parts = np.split(np.arange(n), cuts)
    for i, rows in enumerate(parts):
        artifacts.write_piece(loc, i, table.iloc[rows], rank_by)
    artifacts.write_manifest(loc, rank_by, list(table.columns), list(range(len(parts))), n)
    art = artifacts.Artifact.open(loc)
    expect = rank_sorted(table, rank_by)
    expect.insert(0, "rank", np.arange(1, n + 1))
    got = pd.concat(list(art.ranked_batches(batch)), ignore_index=True) if n else expect.iloc[:0]
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expect, check_dtype=False)
    assert art.total == n
    off, lim = int(rng.integers(0, n + 2)), int(rng.integers(1, 50))
    page = art.page(off, lim)
    assert page["column"].tolist() == expect["column"].iloc[off:off + lim].tolist()
    by = art.page(off, lim, sort="fast", descending=True)
    want = expect.sort_values("fast", ascending=False, kind="stable").iloc[off:off + lim]
    assert by["column"].tolist() == want["column"].tolist()
    top = merge_top([table.iloc[r] for r in parts], rank_by, 10)
    assert top["column"].tolist() == expect["column"].head(10).tolist()


def test_job_ids_are_checked_before_they_name_a_location(tmp_path) -> None:
    with pytest.raises(ValueError):
        artifacts.job_dir(str(tmp_path), "../x")
