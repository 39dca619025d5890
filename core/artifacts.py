"""A job's result table as Parquet pieces, written by the workers, read page by page.

Layout of one job's artifact (a directory or a bucket prefix)::

    <artifact root>/<job id>/g<N>/part-00000.parquet   one piece per partition, rows in rank order
                                  part-00001.parquet
                                  manifest.json        rank_by, columns, piece names, row total
                                  details.json         the top-k columns' equity curves and trades

``g<N>`` is the run's lease generation (core/jobstore.py): each run of a job writes under its
own location, and the job's ``artifact_path`` names the one of the run that finished it, so a
run that lost its lease (a paused or partitioned server, fenced off) can never replace or mix
pieces into the result of the run that took over. `clear_older_runs` removes the locations of
earlier runs. Jobs finished before leases have their pieces directly under ``<job id>/``.

Each piece holds the rows of one partition sorted by the job's ranking (`core/ranking.py`),
so the globally ranked table is a k-way merge of the pieces: `ranked_batches` streams it in
bounded memory (one batch per piece at a time), which serves result pages, CSV and Parquet
downloads without the whole table ever being in the server. A piece is written atomically
(temp + rename on a directory, one PUT on a bucket), so a retried task only ever replaces a
piece with identical content. An artifact from before pieces (one ranked ``.parquet`` file)
reads as a single piece.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .jsonsafe import to_jsonable
from .metrics import metric_direction
from .ranking import rank_sorted

MANIFEST = "manifest.json"
DETAILS = "details.json"
PIECE_FMT = "part-{:05d}.parquet"


RUN_PREFIX = "g"


def job_dir(artifact_root: str, job_id: str, generation: int | None = None) -> str:
    """The artifact location of one job (job ids are server-made hex strings): with
    ``generation``, that run's own location ``<job id>/g<N>``; without, the job's whole tree."""
    if not job_id.isalnum():
        raise ValueError(f"invalid job id {job_id!r}")
    if generation is None:
        return storage.join(artifact_root, job_id)
    if int(generation) < 0:
        raise ValueError(f"invalid generation {generation!r}")
    return storage.join(artifact_root, job_id, f"{RUN_PREFIX}{int(generation)}")


def _run_generation(name: str) -> int | None:
    digits = name[len(RUN_PREFIX):]
    return int(digits) if name.startswith(RUN_PREFIX) and digits.isdigit() else None


def clear_older_runs(artifact_root: str, job_id: str, generation: int) -> list[str]:
    """Delete what earlier runs of a job left under its tree: ``g<M>`` for M < ``generation``
    and files of the layout before leases. Never a later run's location (a server that lost
    its lease must not touch the run that took over). Returns the names removed."""
    root = job_dir(artifact_root, job_id)
    removed = []
    for name in storage.list_names(root):
        g = _run_generation(name)
        if g is not None and g >= generation:
            continue
        storage.delete_tree(storage.join(root, name))
        removed.append(name)
    return removed


def write_piece(artifact: str, index: int, df: pd.DataFrame, rank_by: str) -> str:
    """Write one partition's rows (any order) as a ranked piece; returns its location."""
    table = pa.Table.from_pandas(rank_sorted(df, rank_by), preserve_index=False)
    loc = storage.join(artifact, PIECE_FMT.format(index))
    storage.write_table(loc, table)
    return loc


def write_manifest(artifact: str, rank_by: str, columns: list[str], pieces: list[int], total: int) -> None:
    """Record what the pieces are once all are written (its presence marks a complete artifact)."""
    doc = {"rank_by": rank_by, "columns": columns, "pieces": [PIECE_FMT.format(i) for i in pieces], "total": total}
    storage.write_bytes(storage.join(artifact, MANIFEST), json.dumps(doc).encode())


@dataclass
class Artifact:
    """A finished job's table: where its pieces are and what they hold."""

    location: str
    rank_by: str | None
    columns: list[str]
    pieces: list[str]
    total: int

    @classmethod
    def open(cls, location: str, rank_by: str | None = None) -> Artifact:
        """Read the manifest (or treat a single ``.parquet`` file as one ranked piece)."""
        if location.endswith(".parquet"):
            meta = pq.read_metadata(storage.open_input(location))
            return cls(location, None, list(meta.schema.names), [location], meta.num_rows)
        doc = json.loads(storage.read_bytes(storage.join(location, MANIFEST)))
        pieces = [storage.join(location, p) for p in doc["pieces"]]
        return cls(location, doc["rank_by"], list(doc["columns"]), pieces, int(doc["total"]))

    @property
    def legacy(self) -> bool:
        """True for a one-file artifact (already ranked, with its ``rank`` column)."""
        return self.rank_by is None

    def ranked_batches(self, batch_rows: int = 65_536, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
        """The whole table in rank order, as DataFrames of at most ``batch_rows`` rows, with ``rank``."""
        if self.legacy:
            yield from _file_batches(self.pieces[0], batch_rows, columns)
            return
        yield from _merge(self.pieces, self.rank_by or "", batch_rows, columns)

    def page(self, offset: int, limit: int, sort: str | None = None, descending: bool = False) -> pd.DataFrame:
        """Rows ``[offset, offset + limit)`` in rank order, or sorted by column ``sort``
        (stable on rank order, NaN last). Memory: O(offset + limit + one piece)."""
        if sort is None:
            out, seen = [], 0
            for batch in self.ranked_batches(max(1024, min(65_536, offset + limit))):
                n = len(batch)
                if seen + n > offset:
                    out.append(batch.iloc[max(0, offset - seen):offset + limit - seen])
                seen += n
                if seen >= offset + limit:
                    break
            return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=self.table_columns())
        keep = offset + limit
        best: pd.DataFrame | None = None
        for batch in self.ranked_batches():
            both = batch if best is None else pd.concat([best, batch], ignore_index=True)
            best = both.sort_values(sort, ascending=not descending, kind="stable", na_position="last").head(keep)
        if best is None:
            return pd.DataFrame(columns=self.table_columns())
        return best.iloc[offset:keep].reset_index(drop=True)

    def piece_batches(self, columns: list[str], batch_rows: int = 65_536) -> Iterator[pd.DataFrame]:
        """The table's rows in no particular order (piece by piece), only ``columns`` (those the
        table has): for whole-table statistics that need no ranking (the report's histogram)."""
        have = [c for c in dict.fromkeys(columns) if c in self.table_columns() and c != "rank"]
        for loc in self.pieces:
            yield from _file_batches(loc, batch_rows, have)

    def table_columns(self) -> list[str]:
        """The columns of the ranked table (``rank`` first)."""
        return self.columns if self.legacy else ["rank", *self.columns]

    def read_all(self) -> pd.DataFrame:
        """The whole ranked table (for callers that asked for it in memory)."""
        parts = list(self.ranked_batches(1 << 20))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=self.table_columns())


def _file_batches(loc: str, batch_rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    pf = pq.ParquetFile(storage.open_input(loc))
    for rb in pf.iter_batches(batch_size=batch_rows, columns=columns):
        yield rb.to_pandas()


def _arrow_keys(table: pa.Table, rank_by: str) -> tuple[np.ndarray, np.ndarray]:
    """`ranking.sort_keys` on an Arrow table: (−score, NaN → +inf) and the column index."""
    score = table.column(rank_by).to_numpy(zero_copy_only=False).astype(np.float64) * metric_direction(rank_by)
    primary = np.where(np.isnan(score), np.inf, -score)
    return primary, table.column("column").to_numpy(zero_copy_only=False).astype(np.int64)


def _merge(pieces: list[str], rank_by: str, batch_rows: int, columns: list[str] | None,
           per_piece: int = 8192) -> Iterator[pd.DataFrame]:
    """K-way merge of ranked pieces on Arrow tables, in rounds: each round emits every buffered
    row whose key is at most the smallest "last buffered key" among pieces not yet exhausted
    (those rows can no longer be preceded by unread ones). Memory: one batch per piece."""
    iters = [pq.ParquetFile(storage.open_input(p)).iter_batches(batch_size=per_piece) for p in pieces]
    bufs: list[pa.Table | None] = [None] * len(pieces)
    keys: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0, np.int64))] * len(pieces)
    done = [False] * len(pieces)
    rank = 1

    def refill(i: int) -> None:
        while not done[i] and (bufs[i] is None or bufs[i].num_rows == 0):  # type: ignore[union-attr]
            nxt = next(iters[i], None)
            if nxt is None:
                done[i], bufs[i] = True, None
            else:
                bufs[i] = pa.Table.from_batches([nxt])
                keys[i] = _arrow_keys(bufs[i], rank_by)  # type: ignore[arg-type]

    for i in range(len(pieces)):
        refill(i)
    while True:
        live = [i for i, b in enumerate(bufs) if b is not None and b.num_rows]
        if not live:
            break
        bound: tuple[float, int] | None = None
        for i in live:
            if not done[i]:
                key = (float(keys[i][0][-1]), int(keys[i][1][-1]))
                bound = key if bound is None or key < bound else bound
        parts, kp, kc = [], [], []
        for i in live:
            p, c = keys[i]
            n = len(p) if bound is None else int(np.count_nonzero((p < bound[0]) | ((p == bound[0]) & (c <= bound[1]))))
            if n:
                parts.append(bufs[i].slice(0, n))  # type: ignore[union-attr]
                kp.append(p[:n])
                kc.append(c[:n])
                bufs[i] = bufs[i].slice(n)  # type: ignore[union-attr]
                keys[i] = (p[n:], c[n:])
        if parts:
            order = np.lexsort((np.concatenate(kc), np.concatenate(kp)))
            merged = pa.concat_tables(parts).take(pa.array(order))
            merged = merged.add_column(0, "rank", pa.array(np.arange(rank, rank + merged.num_rows, dtype=np.int64)))
            rank += merged.num_rows
            if columns is not None:
                merged = merged.select(["rank", *[c for c in columns if c != "rank"]])
            for s0 in range(0, merged.num_rows, batch_rows):
                yield merged.slice(s0, batch_rows).to_pandas()
        for i in live:
            refill(i)


def write_details(artifact: str, details: list[dict[str, Any]]) -> None:
    """Store the top-k columns' equity curves and trades beside the table (JSON, written atomically;
    non-finite numbers as null). They are not part of the job's summary row, so that polling a
    job never reads them."""
    storage.write_bytes(storage.join(artifact, DETAILS),
                        json.dumps(to_jsonable(details), separators=(",", ":"), allow_nan=False).encode())


def read_details(artifact: str) -> list[dict[str, Any]] | None:
    """The details `write_details` stored, or None when this artifact has none (older jobs kept
    them in their summary)."""
    try:
        return json.loads(storage.read_bytes(storage.join(artifact, DETAILS)))
    except FileNotFoundError:
        return None


def delete(artifact: str) -> None:
    """Remove a job's artifact (its pieces and manifest, or the one legacy file)."""
    storage.delete_tree(artifact)
