"""JSON clean-up: values as strict JSON data (no NaN or infinity, no numpy types).

Three strengths, one rule at the core (non-finite floats → None, numpy scalars → Python):

- `json_scalar`: one number of a result (a metric, a parameter): numpy scalar → Python,
  NaN/±inf → None; anything else is returned as it is.
- `json_cell`: one cell of a result table: `json_scalar`, plus every pandas "missing" value
  (None, NaN, NaT, ``pd.NA``) → None and timestamps/dates → ISO 8601 strings.
- `to_jsonable`: a whole document (what the job store writes): recursive; mappings → dicts
  with string keys, tuples/sets → lists, numpy arrays → lists, Decimal → float, paths →
  strings, datetimes → ISO strings; TypeError for anything without a JSON form.

And one check of text a database stores: `unstorable_text` finds a string (or key) holding U+0000
(PostgreSQL refuses it in text and in JSONB) or a lone surrogate (JSON's ``"\\ud800"``: not UTF-8,
so SQLite, PostgreSQL and UTF-8 logs refuse it) — what a request must not get stored.

Standard library only at import time: numpy and pandas are looked up when a value needs them.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

__all__ = ["UNSTORABLE_TEXT", "json_cell", "json_scalar", "to_jsonable", "unstorable_text"]

#: a character no database here stores in text: NUL, or a lone surrogate
UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


@functools.cache
def _np_generic() -> type:
    import numpy as np

    return np.generic


@functools.cache
def _pandas() -> Any:
    import pandas as pd

    return pd


def json_scalar(v: Any) -> Any:
    """A numpy scalar as the Python scalar (``.item()``), a non-finite float as None; else ``v`` unchanged."""
    if isinstance(v, _np_generic()):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def json_cell(v: Any) -> Any:
    """One table cell as a plain JSON value: numpy scalars → Python, NaN/±inf/NaT/NA → None, times → ISO."""
    pd = _pandas()
    if isinstance(v, _np_generic()):
        v = v.item()
    if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (pd.Timestamp, dt.datetime, dt.date)):
        return v.isoformat()
    return v


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: NaN/±inf → None, numpy scalars/arrays → Python, tuples → lists.

    Raises TypeError naming the type of anything that has no JSON form.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return to_jsonable(float(value))
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays, without importing numpy
        return to_jsonable(value.tolist())
    if hasattr(value, "isoformat") and callable(value.isoformat):  # pandas.Timestamp and friends
        return value.isoformat()
    raise TypeError(f"cannot store a {type(value).__name__} as JSON")


def unstorable_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first string or key in the JSON document ``value`` that holds an `UNSTORABLE_TEXT`
    character, as (its path — ``a.b[2].c`` —, the character); None when every string can be stored.
    Iterative: any depth."""
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            m = UNSTORABLE_TEXT.search(v)
            if m is not None:
                return where, m.group()
        elif isinstance(v, Mapping):
            items = list(v.items())
            for k, item in reversed(items):
                key = str(k)
                sub = f"{where}.{key}" if where else key
                m = UNSTORABLE_TEXT.search(key)
                if m is not None:
                    return sub, m.group()
                stack.append((sub, item))
        elif isinstance(v, (list, tuple)):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(v))))
    return None
