"""A job's result table as Parquet pieces, written by the workers, read page by page.

Layout of one job's artifact (a directory or a bucket prefix)::

    <artifact root>/<job id>/g<N>/part-00000.parquet   one piece per partition, rows in rank order
                                  part-00001.parquet
                                  manifest.json        rank_by, columns, piece names, row total

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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .ranking import rank_sorted, sort_keys

MANIFEST = "manifest.json"
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


def _merge(pieces: list[str], rank_by: str, batch_rows: int, columns: list[str] | None) -> Iterator[pd.DataFrame]:
    """K-way merge of ranked pieces in batches: emit every buffered row whose key is at most
    the smallest "last key" among pieces that still have rows to read."""
    per_piece = max(256, batch_rows // max(1, len(pieces)))
    iters = [_file_batches(p, per_piece, None) for p in pieces]
    bufs: list[pd.DataFrame | None] = [None] * len(pieces)
    done = [False] * len(pieces)
    rank = 1

    def refill(i: int) -> None:
        while not done[i] and (bufs[i] is None or len(bufs[i]) == 0):
            nxt = next(iters[i], None)
            if nxt is None:
                done[i] = True
                bufs[i] = None
            else:
                bufs[i] = nxt

    for i in range(len(pieces)):
        refill(i)
    while any(b is not None and len(b) for b in bufs):
        live = [i for i, b in enumerate(bufs) if b is not None and len(b)]
        # the bound: rows up to the smallest last key of a piece that may still hold more rows
        bound: tuple[float, int] | None = None
        for i in live:
            if done[i]:
                continue
            p, c = sort_keys(bufs[i].iloc[-1:], rank_by)  # type: ignore[union-attr]
            key = (float(p[0]), int(c[0]))
            bound = key if bound is None or key < bound else bound
        parts, keys_p, keys_c = [], [], []
        for i in live:
            b = bufs[i]
            p, c = sort_keys(b, rank_by)  # type: ignore[arg-type]
            if bound is None:
                n = len(b)  # type: ignore[arg-type]
            else:
                # rows of this buffer with key <= bound (keys ascending within a piece)
                n = int(np.count_nonzero((p < bound[0]) | ((p == bound[0]) & (c <= bound[1]))))
            if n:
                parts.append(b.iloc[:n])  # type: ignore[union-attr]
                keys_p.append(p[:n])
                keys_c.append(c[:n])
                bufs[i] = b.iloc[n:]  # type: ignore[union-attr]
        if parts:
            merged = pd.concat(parts, ignore_index=True)
            order = np.lexsort((np.concatenate(keys_c), np.concatenate(keys_p)))
            merged = merged.iloc[order].reset_index(drop=True)
            merged.insert(0, "rank", np.arange(rank, rank + len(merged), dtype=np.int64))
            rank += len(merged)
            if columns is not None:
                merged = merged[["rank", *[c for c in columns if c != "rank"]]]
            for s in range(0, len(merged), batch_rows):
                yield merged.iloc[s:s + batch_rows]
        for i in live:
            refill(i)


def delete(artifact: str) -> None:
    """Remove a job's artifact (its pieces and manifest, or the one legacy file)."""
    storage.delete_tree(artifact)
