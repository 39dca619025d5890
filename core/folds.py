"""Walk-forward validation options (the spec's ``validation``) and fold boundaries on a calendar.

A walk-forward run tiles the bars after the first training window with test windows; each
fold trains on the window just before its test window (docs/semantics.md "Walk-forward"):

- test window 0 starts at the first training window's end; test window k+1 starts where test
  window k ends; the last one is cut at the run's last bar (dropped when it would hold fewer
  than `MIN_TEST_BARS` bars);
- a fold whose training window holds fewer than `MIN_TRAIN_BARS` bars (a gap in the data) is
  left out;
- fold k trains on ``[0, test_start_k)`` when ``anchored``, else on the ``train`` bars (or
  duration) just before ``test_start_k``.

Sizes are a number of bars (int) or a duration ``"<n>y|m|w|d"`` (years, months, weeks, days).
A duration ends at the first bar at or after ``start + duration`` (exclusive end): the window
starting at bar i with duration D holds the bars with ``t_i <= t < t_i + D``; a rolling
training window ending at bar e starts at the first bar at or after ``t_e − D``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import SpecError
from .specfields import Described, meta

METHODS = ("walk_forward",)
CHOICES = ("per_symbol", "universe")
MIN_TEST_BARS = 2  # a test window needs at least one return
MIN_TRAIN_BARS = 2
_DURATION = re.compile(r"^([1-9][0-9]{0,3})([ymwd])$")
_SIZE_SCHEMA = {"oneOf": [{"type": "integer", "minimum": 2, "maximum": 10_000_000},
                          {"type": "string", "pattern": _DURATION.pattern}]}


def _size(value: Any, where: str, minimum: int) -> int | str:
    if isinstance(value, bool) or value is None:
        raise SpecError(where, f"must be a number of bars or a duration such as \"2y\", \"6m\", \"12w\", "
                               f"\"30d\", got {value!r}")
    if isinstance(value, int):
        if not minimum <= value <= 10_000_000:
            raise SpecError(where, f"must be from {minimum} to 10000000 bars, got {value}")
        return value
    if isinstance(value, str) and _DURATION.fullmatch(value):
        return value
    raise SpecError(where, f"must be a number of bars or a duration such as \"2y\", \"6m\", \"12w\", \"30d\", "
                           f"got {value!r}")


@dataclass(frozen=True)
class Validation:
    """Walk-forward validation: train on a window, choose by ``output.rank_by``, test on the next."""

    method: str = field(default="walk_forward", metadata=meta(
        Described({"type": "string", "enum": list(METHODS)}), "walk_forward (the only method)"))
    train: int | str = field(default=252, metadata=meta(
        Described(_SIZE_SCHEMA), "training window: bars (int ≥ 2) or a duration \"2y\", \"6m\", \"12w\", \"30d\""))
    test: int | str = field(default=63, metadata=meta(
        Described(_SIZE_SCHEMA), "test window (and the step from fold to fold): bars or a duration"))
    anchored: bool = field(default=False, metadata=meta(
        Described({"type": "boolean"}), "true: every training window starts at the first bar; false: rolling"))
    choose: str = field(default="per_symbol", metadata=meta(
        Described({"type": "string", "enum": list(CHOICES)}),
        "per_symbol: each symbol's best combination; universe: one combination, best by the mean over symbols"))

    @classmethod
    def from_dict(cls, doc: Any, path: str = "validation") -> Validation | None:
        if doc is None:
            return None
        if not isinstance(doc, Mapping):
            raise SpecError(path, f"must be an object, got {type(doc).__name__}")
        allowed = {"method", "train", "test", "anchored", "choose"}
        for key in doc:
            if key not in allowed:
                raise SpecError(f"{path}.{key}", f"unknown field; allowed: {', '.join(sorted(allowed))}")
        method = doc.get("method", "walk_forward")
        if method not in METHODS:
            raise SpecError(f"{path}.method", f"must be one of {', '.join(METHODS)}, got {method!r}")
        if "train" not in doc:
            raise SpecError(f"{path}.train", "is required")
        if "test" not in doc:
            raise SpecError(f"{path}.test", "is required")
        anchored = doc.get("anchored", False)
        if not isinstance(anchored, bool):
            raise SpecError(f"{path}.anchored", f"must be true or false, got {anchored!r}")
        choose = doc.get("choose", "per_symbol")
        if choose not in CHOICES:
            raise SpecError(f"{path}.choose", f"must be one of {', '.join(CHOICES)}, got {choose!r}")
        return cls(method=method, train=_size(doc["train"], f"{path}.train", 2),
                   test=_size(doc["test"], f"{path}.test", MIN_TEST_BARS), anchored=anchored, choose=choose)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of the ``validation`` object."""
        from .specfields import object_schema

        schema = object_schema(cls)
        schema["required"] = ["train", "test"]
        for name in ("train", "test"):
            schema["properties"][name].pop("default", None)
        return schema


@dataclass(frozen=True)
class Fold:
    """Bars ``[train_start, train_stop)`` train, ``[test_start, test_stop)`` test (run calendar rows)."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int


def _offset(size: str) -> pd.DateOffset:
    n, unit = int(size[:-1]), size[-1]
    return {"y": pd.DateOffset(years=n), "m": pd.DateOffset(months=n), "w": pd.DateOffset(weeks=n),
            "d": pd.DateOffset(days=n)}[unit]


def _forward(index: pd.DatetimeIndex, start: int, size: int | str) -> int:
    """The exclusive end of the window of ``size`` starting at bar ``start`` (may exceed the bars)."""
    if isinstance(size, int):
        return start + size
    return int(index.searchsorted(index[start] + _offset(size), side="left"))


def _backward(index: pd.DatetimeIndex, stop: int, size: int | str) -> int:
    """The first bar of the window of ``size`` ending just before bar ``stop`` (may be < 0 for bars)."""
    if isinstance(size, int):
        return stop - size
    return int(index.searchsorted(index[stop] - _offset(size), side="left"))


def make_folds(index: pd.DatetimeIndex, v: Validation, path: str = "validation") -> list[Fold]:
    """The folds of ``v`` on the run's bars (a fold whose training window holds fewer than
    `MIN_TRAIN_BARS` bars — a gap in the data — is left out); SpecError when no fold has a full
    test window."""
    n = len(index)
    folds: list[Fold] = []
    full = False
    start = min(n, _forward(index, 0, v.train)) if n else 0
    while start < n:
        end = _forward(index, start, v.test)
        stop = min(n, end)
        if stop - start < MIN_TEST_BARS:
            break
        train_start = 0 if v.anchored else max(0, _backward(index, start, v.train))
        if start - train_start >= MIN_TRAIN_BARS:
            folds.append(Fold(len(folds), train_start, start, start, stop))
            full = full or end <= n
        start = stop
    if not full:
        raise SpecError(path, f"too few bars for one fold: {n} bars; train {v.train!r} and test {v.test!r} need "
                              f"a training window of at least {MIN_TRAIN_BARS} bars and a full test window")
    return folds


# the least time between two bars of a frequency (a month is at least 28 days): bounds how many bars a span holds
BAR_SPACING = {"1min": pd.Timedelta(minutes=1), "5min": pd.Timedelta(minutes=5), "15min": pd.Timedelta(minutes=15),
               "30min": pd.Timedelta(minutes=30), "1h": pd.Timedelta(hours=1), "4h": pd.Timedelta(hours=4),
               "1d": pd.Timedelta(days=1), "1w": pd.Timedelta(days=7), "1mo": pd.Timedelta(days=28)}


def max_bars_in(first: pd.Timestamp, last: pd.Timestamp, frequency: str) -> int:
    """The most bars of ``frequency`` that fit from ``first`` to ``last`` inclusive."""
    return int((last - first) // BAR_SPACING[frequency]) + 1


def check_feasible(v: Validation, first: pd.Timestamp | None, last: pd.Timestamp | None,
                   max_bars: int | None, path: str = "validation") -> None:
    """Refuse at submit (SpecError naming ``path``) a walk-forward no data can hold: the bars run from
    ``first`` to ``last`` at most, ``max_bars`` of them at most (None: unknown). Only necessary
    conditions are checked — `make_folds`, on the real bars, has the last word."""
    need = (v.train if isinstance(v.train, int) else MIN_TRAIN_BARS) + (
        v.test if isinstance(v.test, int) else MIN_TEST_BARS)
    if max_bars is not None and max_bars < need:
        raise SpecError(path, f"too few bars for one fold: the data holds at most {max_bars} bars in the range; "
                              f"train {v.train!r} and test {v.test!r} need {need} or more")
    if first is None or last is None:
        return
    span = first
    for size in (v.train, v.test):
        if isinstance(size, str):
            span = span + _offset(size)
    if span > last:
        raise SpecError(path, f"too few bars for one fold: the data runs from {first.date()} to {last.date()}; "
                              f"train {v.train!r} and test {v.test!r} need a longer range")


def fold_rows(folds: list[Fold]) -> np.ndarray:
    """(n_folds, 4) int64 array of the folds' bounds (for tests and compact transport)."""
    return np.array([[f.train_start, f.train_stop, f.test_start, f.test_stop] for f in folds], dtype=np.int64)
