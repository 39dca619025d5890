"""CSCV's two passes compiled with numba (CPU, parallel over column chunks): what sweeps run.

`overfitting.cscv_best` / `cscv_count` are the plain numpy statement of the same passes (and
the tests' reference); these give the same PBO, logits and slope, ~10× faster on 2 cores, without
building any (splits × columns) array. The S blocks are cut into halves A (blocks 0..S/2−1) and
B (the rest); a split's in-sample set is a pair of bit masks (a, b) with popcount(a) +
popcount(b) = S/2, and its sums are ``SA[a] + SB[b]`` from per-column tables of the 2^(S/2)
subset sums of each half, so each (split, column) costs a few multiplications and additions.
Splits are ordered by popcount(a), then a, then b. Columns go in tiles of `TILE`, laid out
(subset, column-in-tile), and the innermost loop runs over a tile's columns for one split:
branch-free compares and counts the compiler vectorises (SIMD lanes = columns); pass 1 takes a
scalar look at a tile only when one of its columns beats the split's best. A partition small
enough (columns × splits ≤ `SMALL_EVALS`) runs the same arithmetic in numpy instead — bit for
bit the same results, and no compile to wait for (the first small job after an install).

Columns are compared by the key ``d·|d| / var`` (``d = mean − rf``), which orders them like
their Sharpe ratio ``d / √var`` without a square root, and in the loops as ``d·|d| ⋚ key·var``
(no division; one only on a new best); an undefined Sharpe (var ≤ 0, fewer than 2 returns)
has key −inf. Identical columns compute identical values, so they tie exactly.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from numba import njit, prange


@lru_cache(maxsize=8)
def split_layout(n_blocks: int) -> dict[str, np.ndarray]:
    """The splits of ``n_blocks`` blocks in kernel order: masks, group offsets, complements, member matrix."""
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"CSCV needs an even number of blocks >= 2, got {n_blocks}")
    h = n_blocks // 2
    by_pop = [[m for m in range(1 << h) if bin(m).count("1") == k] for k in range(h + 1)]
    a_masks, a_off, b_masks, b_off, grp_off = [], [0], [], [0], [0]
    for k in range(h + 1):
        a_masks += by_pop[k]
        a_off.append(len(a_masks))
        b_masks += by_pop[h - k]
        b_off.append(len(b_masks))
        grp_off.append(grp_off[-1] + len(by_pop[k]) * len(by_pop[h - k]))
    full = (1 << h) - 1
    index: dict[tuple[int, int], int] = {}
    for k in range(h + 1):
        for ia, a in enumerate(by_pop[k]):
            for ib, b in enumerate(by_pop[h - k]):
                index[(a, b)] = grp_off[k] + ia * len(by_pop[h - k]) + ib
    n_splits = grp_off[-1]
    comp = np.empty(n_splits, dtype=np.int64)
    member = np.zeros((n_splits, n_blocks))
    for (a, b), i in index.items():
        comp[i] = index[(full & ~a, full & ~b)]
        for j in range(h):
            member[i, j] = (a >> j) & 1
            member[i, h + j] = (b >> j) & 1
    return {"a_masks": np.array(a_masks, np.int64), "a_off": np.array(a_off, np.int64),
            "b_masks": np.array(b_masks, np.int64), "b_off": np.array(b_off, np.int64),
            "grp_off": np.array(grp_off, np.int64), "comp": comp, "member": member}


@njit(inline="always", cache=True)
def _subset_sums(x: Any, out: Any, lo: int, h: int) -> None:  # pragma: no cover - compiled
    out[0] = 0.0
    for m in range(1, 1 << h):
        low = m & (-m)
        j = 0
        while (1 << j) != low:
            j += 1
        out[m] = out[m & (m - 1)] + x[lo + j]


@njit(inline="always", cache=True)
def _key(x1: float, x2: float, inv_n: float, inv_nm1: float, rf: float) -> float:  # pragma: no cover
    mean = x1 * inv_n
    var = (x2 - x1 * mean) * inv_nm1
    if not var > 0.0:
        return -math.inf
    d = mean - rf
    return d * abs(d) / var


TILE = 16  # columns evaluated together: the innermost loop runs over a tile's columns (SIMD lanes)


@njit(inline="always", cache=True)
def _tile_sums(s1, s2, t0, tn, h, b_masks, sa1, sa2, gb1, gb2, tmp1, tmp2):  # pragma: no cover - compiled
    """Subset sums of columns t0..t0+tn−1 as (subset, column-in-tile) tables: the A half by mask, the B
    half in split order. Columns tn..TILE−1 are padding with Σr² = NaN: an undefined key everywhere."""
    nm = 1 << h
    nbm = b_masks.shape[0]
    for q in range(TILE):
        if q < tn:
            _subset_sums(s1[t0 + q], tmp1, 0, h)
            _subset_sums(s2[t0 + q], tmp2, 0, h)
            for m in range(nm):
                sa1[m, q] = tmp1[m]
                sa2[m, q] = tmp2[m]
            _subset_sums(s1[t0 + q], tmp1, h, h)
            _subset_sums(s2[t0 + q], tmp2, h, h)
            for j in range(nbm):
                gb1[j, q] = tmp1[b_masks[j]]
                gb2[j, q] = tmp2[b_masks[j]]
        else:
            for m in range(nm):
                sa1[m, q] = 0.0
                sa2[m, q] = math.nan
            for j in range(nbm):
                gb1[j, q] = 0.0
                gb2[j, q] = math.nan


@njit(inline="always", cache=True)
def _tile_buffers(h: int, nbm: int):  # pragma: no cover - compiled
    """A tile's subset-sum tables (A half, B half in split order) and two scratch rows."""
    return (np.empty((1 << h, TILE)), np.empty((1 << h, TILE)), np.empty((nbm, TILE)), np.empty((nbm, TILE)),
            np.empty(1 << h), np.empty(1 << h))


@njit(parallel=True, cache=True)
def _pass1(s1, s2, inv_n, inv_nm1, a_masks, a_off, b_masks, b_off, grp_off, rf, n_chunks):  # pragma: no cover
    n_cols = s1.shape[0]
    h = s1.shape[1] // 2
    n_splits = inv_n.shape[0]
    best = np.full((n_chunks, n_splits), -math.inf)
    col = np.zeros((n_chunks, n_splits), dtype=np.int64)
    step = (n_cols + n_chunks - 1) // n_chunks
    for ch in range(n_chunks):  # no defined key in a split: the chunk's first (lowest) column
        col[ch, :] = min(ch * step, max(n_cols - 1, 0))
    for ch in prange(n_chunks):
        sa1, sa2, gb1, gb2, tmp1, tmp2 = _tile_buffers(h, b_masks.shape[0])
        brow = best[ch]
        crow = col[ch]
        hi = min(n_cols, (ch + 1) * step)
        for t0 in range(ch * step, hi, TILE):
            tn = min(TILE, hi - t0)
            _tile_sums(s1, s2, t0, tn, h, b_masks, sa1, sa2, gb1, gb2, tmp1, tmp2)
            for k in range(h + 1):
                nb = b_off[k + 1] - b_off[k]
                bo = b_off[k]
                for ia in range(a_off[k + 1] - a_off[k]):
                    a = a_masks[a_off[k] + ia]
                    base = grp_off[k] + ia * nb
                    for ib in range(nb):
                        i = base + ib
                        j = bo + ib
                        bi = brow[i]
                        inn = inv_n[i]
                        inm = inv_nm1[i]
                        # key d|d|/var > best  <=>  d|d| > best·var (var > 0): a branch-free count over
                        # the tile's columns (vectorised), then, rarely, a scalar pass in column order
                        hit = 0
                        for q in range(TILE):
                            x1 = sa1[a, q] + gb1[j, q]
                            mean = x1 * inn
                            var = (sa2[a, q] + gb2[j, q] - x1 * mean) * inm
                            d = mean - rf
                            hit += (var > 0.0) & (d * abs(d) > bi * var)
                        if hit:
                            for q in range(tn):  # the first of equal keys (the lowest column) stays
                                x1 = sa1[a, q] + gb1[j, q]
                                mean = x1 * inn
                                var = (sa2[a, q] + gb2[j, q] - x1 * mean) * inm
                                d = mean - rf
                                if var > 0.0 and d * abs(d) > brow[i] * var:
                                    brow[i] = d * abs(d) / var
                                    crow[i] = t0 + q
    return best, col


@njit(parallel=True, cache=True)
def _keys_at(s1, s2, cols, rows, inv_n, inv_nm1, a_masks, a_off, b_masks, b_off, grp_off, rf):  # pragma: no cover
    """The key of column ``cols[j]`` over the IS set of split ``rows[j]`` (same arithmetic as the passes)."""
    h = s1.shape[1] // 2
    out = np.empty(cols.shape[0])
    for j in prange(cols.shape[0]):
        sa1 = np.empty(1 << h)
        sa2 = np.empty(1 << h)
        sb1 = np.empty(1 << h)
        sb2 = np.empty(1 << h)
        c = cols[j]
        _subset_sums(s1[c], sa1, 0, h)
        _subset_sums(s2[c], sa2, 0, h)
        _subset_sums(s1[c], sb1, h, h)
        _subset_sums(s2[c], sb2, h, h)
        i = rows[j]
        k = 0
        while grp_off[k + 1] <= i:
            k += 1
        nb = b_off[k + 1] - b_off[k]
        ia = (i - grp_off[k]) // nb
        ib = (i - grp_off[k]) % nb
        a = a_masks[a_off[k] + ia]
        b = b_masks[b_off[k] + ib]
        out[j] = _key(sa1[a] + sb1[b], sa2[a] + sb2[b], inv_n[i], inv_nm1[i], rf)
    return out


@njit(parallel=True, cache=True)
def _pass2(s1, s2, thr, thr_fin, own, own_lt, inv_n, inv_nm1, a_masks, a_off, b_masks, b_off, grp_off, rf,
           n_chunks):  # pragma: no cover
    """Per IS set u: columns (other than the chosen one, local index own[u] or −1) whose key is below /
    equal to thr[u]; own_lt[u] is the chosen column's own comparison (1 below, 0 equal, −1 above)."""
    n_cols = s1.shape[0]
    h = s1.shape[1] // 2
    n_splits = inv_n.shape[0]
    less = np.zeros((n_chunks, n_splits), dtype=np.int64)
    equal = np.zeros((n_chunks, n_splits), dtype=np.int64)
    step = (n_cols + n_chunks - 1) // n_chunks
    for ch in prange(n_chunks):
        sa1, sa2, gb1, gb2, tmp1, tmp2 = _tile_buffers(h, b_masks.shape[0])
        lrow = less[ch]
        erow = equal[ch]
        lo = ch * step
        hi = min(n_cols, (ch + 1) * step)
        n_pad = 0
        for t0 in range(lo, hi, TILE):
            tn = min(TILE, hi - t0)
            n_pad += TILE - tn
            _tile_sums(s1, s2, t0, tn, h, b_masks, sa1, sa2, gb1, gb2, tmp1, tmp2)
            for k in range(h + 1):
                nb = b_off[k + 1] - b_off[k]
                bo = b_off[k]
                for ia in range(a_off[k + 1] - a_off[k]):
                    a = a_masks[a_off[k] + ia]
                    base = grp_off[k] + ia * nb
                    for ib in range(nb):
                        i = base + ib
                        j = bo + ib
                        t = thr[i]
                        tf = thr_fin[i]
                        inn = inv_n[i]
                        inm = inv_nm1[i]
                        lt = 0
                        eq = 0
                        for q in range(TILE):
                            x1 = sa1[a, q] + gb1[j, q]
                            mean = x1 * inn
                            var = (sa2[a, q] + gb2[j, q] - x1 * mean) * inm
                            d = mean - rf
                            # key < t  <=>  d|d| < t·var when var > 0; an undefined key (−inf) is below
                            # any finite t (thr_fin = 0 for a finite t, −1 for t = −inf)
                            pos = var > 0.0
                            lhs = d * abs(d) if pos else -1.0
                            rhs = t * var if pos else tf
                            lt += lhs < rhs
                            eq += lhs == rhs
                        lrow[i] += lt
                        erow[i] += eq
        for i in range(n_splits):
            # padding columns (undefined keys) were counted: take them back
            if n_pad:
                if thr_fin[i] == 0.0:
                    lrow[i] -= n_pad
                else:
                    erow[i] -= n_pad
            # the chosen column itself is not counted: take its own comparison back
            c = own[i]
            if lo <= c < hi:
                v = own_lt[i]
                lrow[i] -= v == 1
                erow[i] -= v == 0
    return less, equal


@njit(cache=True)
def _own_cmp(s1, s2, own, thr, thr_fin, inv_n, inv_nm1, a_masks, a_off, b_masks, b_off, grp_off,
             rf):  # pragma: no cover
    """Per IS set u whose chosen column is local (own[u] >= 0): its comparison in `_pass2`'s arithmetic."""
    h = s1.shape[1] // 2
    out = np.full(own.shape[0], -1, dtype=np.int64)
    sa1 = np.empty(1 << h)
    sa2 = np.empty(1 << h)
    sb1 = np.empty(1 << h)
    sb2 = np.empty(1 << h)
    for i in range(own.shape[0]):
        c = own[i]
        if c < 0:
            continue
        _subset_sums(s1[c], sa1, 0, h)
        _subset_sums(s2[c], sa2, 0, h)
        _subset_sums(s1[c], sb1, h, h)
        _subset_sums(s2[c], sb2, h, h)
        k = 0
        while grp_off[k + 1] <= i:
            k += 1
        nb = b_off[k + 1] - b_off[k]
        a = a_masks[a_off[k] + (i - grp_off[k]) // nb]
        b = b_masks[b_off[k] + (i - grp_off[k]) % nb]
        x1 = sa1[a] + sb1[b]
        mean = x1 * inv_n[i]
        var = (sa2[a] + sb2[b] - x1 * mean) * inv_nm1[i]
        d = mean - rf
        pos = var > 0.0
        lhs = d * abs(d) if pos else -1.0
        rhs = thr[i] * var if pos else thr_fin[i]
        out[i] = 1 if lhs < rhs else (0 if lhs == rhs else -1)
    return out


def _threads() -> int:
    from numba import get_num_threads

    return get_num_threads()


def _prep(sums: np.ndarray, block_n: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], Any, Any]:
    lay = split_layout(int(sums.shape[1]))
    n = lay["member"] @ np.asarray(block_n, dtype=np.float64)
    with np.errstate(divide="ignore"):
        inv_n = np.where(n > 0, 1.0 / np.where(n > 0, n, 1.0), np.nan)
        inv_nm1 = np.where(n > 1, 1.0 / np.where(n > 1, n - 1.0, 1.0), np.nan)
    s1 = np.ascontiguousarray(sums[:, :, 0], dtype=np.float64)
    s2 = np.ascontiguousarray(sums[:, :, 1], dtype=np.float64)
    return s1, s2, lay, inv_n, inv_nm1


def _args(lay: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    return lay["a_masks"], lay["a_off"], lay["b_masks"], lay["b_off"], lay["grp_off"]


def _chunks(n_cols: int) -> int:
    return max(1, min(n_cols, 4 * _threads()))


def key_to_sharpe(key: np.ndarray) -> np.ndarray:
    """The Sharpe ratio of a key ``d·|d|/var`` (−inf stays −inf)."""
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(key), np.sign(key) * np.sqrt(np.abs(key)), key)


# ---------------------------------------------------------------- small partitions: numpy, no compile
SMALL_EVALS = 1 << 22  # (columns × splits) up to which a partition runs the passes in numpy (no JIT wait)


def _np_subset_sums(x: np.ndarray, lo: int, h: int) -> np.ndarray:
    """`_subset_sums` for every row of ``x`` (C, S) at once: (C, 2^h), the same additions in the same order."""
    out = np.zeros((x.shape[0], 1 << h))
    for m in range(1, 1 << h):
        low = m & (-m)
        out[:, m] = out[:, m & (m - 1)] + x[:, lo + low.bit_length() - 1]
    return out


@lru_cache(maxsize=8)
def _split_ab(n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """Per split (kernel order) its A-half mask and B-half mask."""
    lay = split_layout(n_blocks)
    a_of, b_of = [], []
    for k in range(len(lay["a_off"]) - 1):
        for ia in range(lay["a_off"][k], lay["a_off"][k + 1]):
            for ib in range(lay["b_off"][k], lay["b_off"][k + 1]):
                a_of.append(lay["a_masks"][ia])
                b_of.append(lay["b_masks"][ib])
    return np.array(a_of, dtype=np.int64), np.array(b_of, dtype=np.int64)


def _np_lhs_var(s1: np.ndarray, s2: np.ndarray, inv_n: np.ndarray, inv_nm1: np.ndarray,
                rf: float) -> tuple[np.ndarray, np.ndarray]:
    """(C, splits) ``d·|d|`` and ``var`` of every split's IS set, with the compiled passes' arithmetic."""
    h = s1.shape[1] // 2
    a_of, b_of = _split_ab(s1.shape[1])
    x1 = _np_subset_sums(s1, 0, h)[:, a_of] + _np_subset_sums(s1, h, h)[:, b_of]
    mean = x1 * inv_n
    var = (_np_subset_sums(s2, 0, h)[:, a_of] + _np_subset_sums(s2, h, h)[:, b_of] - x1 * mean) * inv_nm1
    d = mean - rf
    return d * np.abs(d), var


def _np_keys(lhs: np.ndarray, var: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(var > 0.0, lhs / np.where(var > 0.0, var, 1.0), -math.inf)


def _small(n_cols: int, n_splits: int) -> bool:
    return n_cols * n_splits <= SMALL_EVALS


def runs_compiled(n_cols: int, n_blocks: int) -> bool:
    """Whether a partition of ``n_cols`` columns and ``n_blocks`` blocks runs the compiled passes
    (else numpy, bit-for-bit the same results: tests/test_overfitting.py)."""
    return not _small(n_cols, math.comb(n_blocks, n_blocks // 2))


def cscv_best(sums: np.ndarray, block_n: np.ndarray, columns: np.ndarray, risk_free: float = 0.0,
              compiled: bool | None = None) -> dict[str, Any]:
    """Pass 1 on one partition: ``sums`` (C, S, 2) of Σr and Σr² per block, ``block_n`` (S,) returns per block.
    ``compiled``: the numba pass (True), numpy (False) or by size (None, `runs_compiled`).

    Returns per split (kernel order) the best IS column's ``key``, its ``oos_key`` and global ``column``.
    """
    s1, s2, lay, inv_n, inv_nm1 = _prep(sums, block_n)
    ids = np.asarray(columns, dtype=np.int64)
    n_cols = s1.shape[0]
    if not (compiled if compiled is not None else not _small(n_cols, inv_n.shape[0])):
        # a small sweep waits for no compiler (the first job after install)
        keys = _np_keys(*_np_lhs_var(s1, s2, inv_n, inv_nm1, float(risk_free)))  # (C, splits)
        local = np.argmax(keys, axis=0)  # the first of equal keys: the lowest column
        # its OOS key: its key over the IS set of the complement split
        return {"key": keys[local, np.arange(keys.shape[1])], "oos_key": keys[local, lay["comp"]],
                "column": ids[local]}
    best, col = _pass1(s1, s2, inv_n, inv_nm1, *_args(lay), float(risk_free), _chunks(n_cols))
    pick = np.argmax(best, axis=0)  # first chunk among equals: the lowest column
    idx = np.arange(best.shape[1])
    key, local = best[pick, idx], col[pick, idx]
    oos = _keys_at(s1, s2, local, lay["comp"], inv_n, inv_nm1, *_args(lay), float(risk_free))
    return {"key": key, "oos_key": oos, "column": ids[local]}


def merge_best(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge pass-1 results: the highest key per split; ties to the lowest column id."""
    out = {k: v.copy() for k, v in parts[0].items()}
    for p in parts[1:]:
        better = (p["key"] > out["key"]) | ((p["key"] == out["key"]) & (p["column"] < out["column"]))
        for k in out:
            out[k] = np.where(better, p[k], out[k])
    return out


def cscv_count(sums: np.ndarray, block_n: np.ndarray, columns: np.ndarray, best: dict[str, Any],
               risk_free: float = 0.0, compiled: bool | None = None) -> dict[str, Any]:
    """Pass 2 on one partition: per split, its other columns whose OOS key is below / equal to the chosen one's."""
    s1, s2, lay, inv_n, inv_nm1 = _prep(sums, block_n)
    comp = lay["comp"]
    thr = np.ascontiguousarray(best["oos_key"][comp])
    thr_fin = np.where(thr > -np.inf, 0.0, -1.0)
    ids = np.asarray(columns, dtype=np.int64)
    pos = {int(c): j for j, c in enumerate(ids)}
    own = np.array([pos.get(int(c), -1) for c in best["column"][comp]], dtype=np.int64)
    rf = float(risk_free)
    if not (compiled if compiled is not None else not _small(s1.shape[0], inv_n.shape[0])):
        lhs, var = _np_lhs_var(s1, s2, inv_n, inv_nm1, rf)
        pos_ = var > 0.0
        lhs = np.where(pos_, lhs, -1.0)
        with np.errstate(invalid="ignore"):  # −inf × an undefined var: not used (pos_ is False there)
            rhs = np.where(pos_, thr * var, thr_fin)
        lt, eq = lhs < rhs, lhs == rhs
        mine = own >= 0  # the chosen column itself is not counted
        lt[own[mine], np.flatnonzero(mine)] = False
        eq[own[mine], np.flatnonzero(mine)] = False
        return {"n_less": lt.sum(axis=0)[comp], "n_equal": eq.sum(axis=0)[comp], "n_columns": np.int64(len(ids))}
    own_lt = _own_cmp(s1, s2, own, thr, thr_fin, inv_n, inv_nm1, *_args(lay), rf)
    less, equal = _pass2(s1, s2, thr, thr_fin, own, own_lt, inv_n, inv_nm1, *_args(lay), rf, _chunks(s1.shape[0]))
    return {"n_less": less.sum(axis=0)[comp], "n_equal": equal.sum(axis=0)[comp], "n_columns": np.int64(len(ids))}


def summary_inputs(best: dict[str, Any]) -> dict[str, np.ndarray]:
    """`overfitting.cscv_summary`'s ``best`` argument (IS / OOS Sharpe ratios) from a merged pass 1."""
    return {"is": key_to_sharpe(best["key"]), "oos": key_to_sharpe(best["oos_key"]), "column": best["column"]}
