"""core/jsonsafe.py: non-finite floats → None, numpy scalars → Python, at three strengths; the text
no database stores (NUL, lone surrogates) found with its path."""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from decimal import Decimal
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import pytest

from gpu_backtest.core import jobstore
from gpu_backtest.core.jsonsafe import json_cell, json_scalar, to_jsonable, unstorable_text

NON_FINITE = [math.nan, math.inf, -math.inf, np.float64("nan"), np.float32("inf"), np.float64("-inf")]


@pytest.mark.parametrize("f", [json_scalar, json_cell, to_jsonable])
def test_non_finite_and_numpy_scalars(f: object) -> None:
    for v in NON_FINITE:
        assert f(v) is None, v  # type: ignore[operator]
    for v, want in ((np.int64(3), 3), (np.float32(0.5), 0.5), (np.bool_(True), True), (1.25, 1.25), (7, 7),
                    ("x", "x"), (None, None), (True, True)):
        got = f(v)  # type: ignore[operator]
        assert got == want and type(got) is type(want), (v, got)


def test_json_scalar_leaves_everything_else_alone() -> None:
    when = pd.Timestamp("2020-01-02", tz="UTC")
    for v in (when, [1.0, math.nan], {"a": 1}, Decimal("1.5"), pd.NaT):
        assert json_scalar(v) is v


def test_json_cell_missing_and_times() -> None:
    assert json_cell(pd.NaT) is None and json_cell(pd.NA) is None and json_cell(np.datetime64("NaT")) is None
    assert json_cell(pd.Timestamp("2020-01-02 03:04", tz="UTC")) == "2020-01-02T03:04:00+00:00"
    assert json_cell(dt.date(2020, 1, 2)) == "2020-01-02"
    assert json_cell(dt.datetime(2020, 1, 2, 3)) == "2020-01-02T03:00:00"
    assert json_cell(Decimal("NaN")) is None
    frame = pd.DataFrame({"x": [1.5, np.nan], "t": pd.to_datetime(["2020-01-02", None], utc=True),
                          "s": ["a", None], "i": np.array([1, 2], dtype=np.int64)})
    rows = [{k: json_cell(v) for k, v in rec.items()} for rec in frame.to_dict("records")]
    assert rows == [{"x": 1.5, "t": "2020-01-02T00:00:00+00:00", "s": "a", "i": 1},
                    {"x": None, "t": None, "s": None, "i": 2}]
    json.dumps(rows, allow_nan=False)


def test_to_jsonable_documents() -> None:
    doc = {"a": (1, np.float64(2.5), math.nan), 3: {np.int32(4)}, "arr": np.array([[1.0, np.inf]]),
           "when": dt.datetime(2020, 1, 2, tzinfo=dt.UTC), "ts": pd.Timestamp("2020-01-02", tz="UTC"),
           "d": Decimal("0.1"), "p": PurePosixPath("/x/y"), "t": dt.time(9, 30)}
    assert to_jsonable(doc) == {"a": [1, 2.5, None], "3": [4], "arr": [[1.0, None]],
                                "when": "2020-01-02T00:00:00+00:00", "ts": "2020-01-02T00:00:00+00:00",
                                "d": 0.1, "p": "/x/y", "t": "09:30:00"}
    with pytest.raises(TypeError, match="object"):
        to_jsonable(object())
    assert jobstore.to_jsonable is to_jsonable  # the store's public name is this function


def test_imports_no_numpy_or_pandas() -> None:
    code = ("import sys; import gpu_backtest.core.jsonsafe as j; j.to_jsonable({'a': [1.0, float('nan')]}); "
            "print(sorted(m for m in ('numpy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out


def test_unstorable_text_names_the_first_string_or_key_with_its_path() -> None:
    assert unstorable_text({"a": [1, "ok", {"b": "x\x00y"}], "c": "\ud800"}) == ("a[2].b", "\x00")
    assert unstorable_text({"k\udfff": 1}) == ("k\udfff", "\udfff")
    assert unstorable_text([["fine", "é 😀 \n\t"], {"z": ("\ud83d",)}]) == ("[1].z[0]", "\ud83d")
    stored = {"a": ["é 😀", 1.5, None, True], "b": {"c": "\x01: other control characters can be stored"}}
    assert unstorable_text(stored) is None
    deep: object = "\x00"
    for _ in range(5000):  # iterative: any depth
        deep = [deep]
    assert unstorable_text(deep) == ("[0]" * 5000, "\x00")
