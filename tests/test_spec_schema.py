"""The OpenAPI request schema is derived from the spec model: the validator (`BacktestSpec.from_dict`)
and the schema (`BacktestSpec.json_schema`, served in /openapi.json) accept the same fields, choices,
defaults and bounds."""

from __future__ import annotations

import copy
import dataclasses
import random
import re
from pathlib import Path
from typing import Any

import pytest

from gpu_backtest.core.errors import SpecError
from gpu_backtest.core.metrics import ALL_METRICS
from gpu_backtest.core.spec import (
    DIRECTIONS,
    FILLS,
    FREQUENCIES,
    SIZE_TYPES,
    BacktestSpec,
    Costs,
    Execution,
    MetricsOptions,
    OutputOptions,
    Portfolio,
)
from gpu_backtest.web.openapi import openapi_document, schema_to_31

NESTED = {"costs": Costs, "execution": Execution, "metrics": MetricsOptions, "output": OutputOptions,
          "portfolio": Portfolio}
SCHEMA = BacktestSpec.json_schema()
README = Path(__file__).resolve().parents[1] / "README.md"

# every field, top-level and nested, set to a valid value other than its default
FULL: dict[str, Any] = {
    "strategy": "sma_crossover",
    "params": {"fast": {"start": 5, "stop": 20, "step": 5}, "slow": [50, 100]},
    "symbols": ["AAA", "BRK.B"],
    "source": "synthetic",
    "frequency": "1h",
    "start": "2015-01-02",
    "end": "2016-06-30T16:00:00",
    "adjusted": False,
    "costs": {"fees": 0.001, "fixed_fee": 1.0, "slippage": 0.0005},
    "execution": {"init_cash": 50_000, "fill": "next_open", "direction": "both", "size": 0.5,
                  "size_type": "percent", "fractional": False, "sl_stop": 0.05, "tp_stop": 0.2, "tsl_stop": 0.1},
    "metrics": {"risk_free": 0.0001, "periods_per_year": 252 * 7, "benchmark": "SPY"},
    "output": {"rank_by": "sortino", "top_k": 3, "equity_curves": False, "trades": False,
               "metrics": ["sortino", "total_return"], "overfitting": {"blocks": 8}},
    "callback_url": "https://example.com/hook",
    "portfolio": {"rebalance": "1q", "select": "long_short", "quantile": 0.1, "weighting": "score",
                  "volatility_lookback": 20, "max_weight": 0.2, "gross_leverage": 1.5, "net_exposure": 0.5,
                  "cash_buffer": 0.05, "min_trade": 100.0},
    "validation": {"method": "walk_forward", "train": "2y", "test": 63, "anchored": True, "choose": "universe"},
}


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 → JSON Schema draft 4 (boolean exclusiveMinimum/Maximum): ``nullable`` → ``| null``."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: ({name: _json_schema(sub) for name, sub in v.items()} if k == "properties" else _json_schema(v))
           for k, v in node.items() if k not in ("nullable", "default", "description")}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def schema_accepts(doc: Any, schema: dict[str, Any] = SCHEMA) -> bool:
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft4Validator(_json_schema(schema)).is_valid(doc)


def validator_accepts(doc: Any) -> bool:
    try:
        BacktestSpec.from_dict(doc)
    except SpecError:
        return False
    return True


def test_openapi_serves_the_derived_schema() -> None:
    served = dict(openapi_document()["components"]["schemas"]["BacktestSpec"])
    assert served.pop("examples") and served == schema_to_31(SCHEMA)  # the same schema, in OpenAPI 3.1's dialect


def test_schema_properties_are_the_validators_fields() -> None:
    assert SCHEMA["required"] == ["strategy"] and SCHEMA["additionalProperties"] is False
    assert set(SCHEMA["properties"]) == {f.name for f in dataclasses.fields(BacktestSpec)} == set(FULL)
    for name, cls in NESTED.items():
        sub = {k: v for k, v in SCHEMA["properties"][name].items() if not (name == "portfolio" and k == "default")}
        assert sub == {**cls.json_schema(), "nullable": True} and sub["additionalProperties"] is False
        assert set(sub["properties"]) == {f.name for f in dataclasses.fields(cls)} == set(FULL[name]), name


def test_every_documented_field_validates() -> None:
    assert schema_accepts(FULL)
    spec = BacktestSpec.from_dict(FULL).to_dict()
    for key, value in FULL.items():
        if key in NESTED:
            for sub, v in value.items():
                assert spec[key][sub] == v, (key, sub)
        elif key != "params":
            assert spec[key] == value, key
    text = README.read_text()
    documented = set(SCHEMA["properties"]) | {k for n in NESTED for k in SCHEMA["properties"][n]["properties"]}
    for name in documented:  # the README's spec table (and API table) names every field
        assert f"`{name}`" in text, name


@pytest.mark.parametrize("where", ["", *NESTED])
def test_unknown_fields_are_rejected_by_both(where: str) -> None:
    doc = copy.deepcopy(FULL)
    (doc[where] if where else doc)["bogus"] = 1
    assert not schema_accepts(doc)
    with pytest.raises(SpecError) as info:
        BacktestSpec.from_dict(doc)
    assert info.value.path == (f"{where}.bogus" if where else "bogus")


def test_defaults_are_the_validators_defaults() -> None:
    spec = BacktestSpec.from_dict({"strategy": "x"}).to_dict()
    for name, prop in SCHEMA["properties"].items():
        if name in NESTED:
            defaults = spec[name] or dataclasses.asdict(NESTED[name]())  # portfolio: null = the defaults
            for sub, p in prop["properties"].items():
                assert p["default"] == defaults[sub], (name, sub)
        elif name != "strategy":
            assert prop["default"] == spec[name], name


def test_choices() -> None:
    props = SCHEMA["properties"]
    enums = {("frequency",): FREQUENCIES, ("execution", "fill"): FILLS, ("execution", "direction"): DIRECTIONS,
             ("execution", "size_type"): SIZE_TYPES, ("output", "rank_by"): ALL_METRICS}
    for path, choices in enums.items():
        prop = props[path[0]] if len(path) == 1 else props[path[0]]["properties"][path[1]]
        assert prop["enum"] == list(choices), path
        for value in [*choices, "nope"]:
            doc: dict[str, Any] = {"strategy": "x"}
            if len(path) == 1:
                doc[path[0]] = value
            else:
                doc[path[0]] = {path[1]: value}
            assert schema_accepts(doc) == validator_accepts(doc) == (value != "nope"), (path, value)
    assert props["output"]["properties"]["metrics"]["items"]["enum"] == list(ALL_METRICS)


def test_number_bounds_agree() -> None:
    checked = 0
    for name in NESTED:
        for field, prop in SCHEMA["properties"][name]["properties"].items():
            if prop.get("type") not in ("number", "integer"):
                continue
            edges = [b + d for b in (prop.get("minimum"), prop.get("maximum")) if b is not None
                     for d in (-1, -1e-9, 0, 1e-9, 1)]
            for value in [*edges, 0.5, 7, -3, 2000, True, "1", None]:
                sub: dict[str, Any] = {field: value}
                if field == "size":  # its maximum is 1 only for percent sizes; the schema says so in words
                    sub["size_type"] = "units"
                doc = {"strategy": "x", name: sub}
                assert schema_accepts(doc) == validator_accepts(doc), (name, field, value)
                checked += 1
    assert checked > 100


def _random_doc(rng: random.Random) -> dict[str, Any]:
    anything = [None, True, 0, 1, -1, 0.5, 1.0, 1001, float("-1e9"), "", "x", "1d", "AAA", [], ["sharpe"],
                ["luck"], {}, "2020-01-01", "https://h", "ftp://h"]
    doc: dict[str, Any] = {}
    for key, value in FULL.items():
        if rng.random() < 0.5:
            continue
        if key in NESTED:
            doc[key] = {k: (v if rng.random() < 0.85 else rng.choice(anything))
                        for k, v in value.items() if rng.random() < 0.6}
        else:
            doc[key] = value if rng.random() < 0.85 else rng.choice(anything)
    if "start" in doc and "end" in doc and rng.random() < 0.5:
        doc["start"], doc["end"] = doc["end"], doc["start"]
    return doc


def test_random_documents() -> None:
    """What the validator accepts the schema accepts; for the option objects (no bespoke checks) also
    the converse. (The schema is looser only where it cannot say more: dates that pandas must parse,
    a range whose stop is below its start, a percent size above 1, a parameter the strategy lacks.)"""
    rng = random.Random(11)
    seen = {True: 0, False: 0}
    for _ in range(4500):
        doc = _random_doc(rng)
        ok = validator_accepts(doc)
        seen[ok] += 1
        if ok:
            assert schema_accepts(doc), doc
        for name in NESTED:
            sub = doc.get(name)
            if not isinstance(sub, dict) or (name == "execution" and sub.get("size_type", "percent") == "percent"
                                             and isinstance(sub.get("size"), (int, float)) and sub["size"] > 1):
                continue
            alone = {"strategy": "x", name: sub}
            assert schema_accepts(alone) == validator_accepts(alone), alone
    assert min(seen.values()) > 300, seen


def test_schema_is_json_and_patterns_compile() -> None:
    import json

    text = json.dumps(SCHEMA, allow_nan=False)
    for pattern in re.findall(r'"pattern": "((?:[^"\\]|\\.)*)"', text):
        re.compile(json.loads(f'"{pattern}"'))


def test_strategy_may_be_an_expression_object() -> None:
    """An expression strategy object: what the validator accepts the schema accepts; the schema
    refuses what it can see (unknown keys, non-string expressions, unknown choices), as does the validator."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from expr_gen import gen_doc

    good = {"name": "x", "signals": {"entry": "cross_above(sma(close, fast), sma(close, 50))", "exit": "close < 1"},
            "params": {"fast": {"type": "int", "default": 10, "min": 2, "max": 40}}, "constraint": "fast < 40"}
    portfolio = {"score": "-pct_change(close, lb)", "params": {"lb": {"type": "int", "default": 5}}, "select": "all"}
    for strategy in (good, portfolio):
        doc = {"strategy": strategy}
        assert schema_accepts(doc) and validator_accepts(doc), strategy
        assert BacktestSpec.from_dict(BacktestSpec.from_dict(doc).to_dict()).to_dict() == BacktestSpec.from_dict(
            doc).to_dict()
    for bad in ({**good, "bogus": 1}, {**good, "signals": {"entry": 1, "exit": "close < 1"}},
                {**portfolio, "select": "best"}, {**good, "params": {"fast": {"type": "complex", "default": 1}}},
                {"signals": {"entry": "close > 1"}}):
        doc = {"strategy": bad}
        assert not schema_accepts(doc) and not validator_accepts(doc), bad
    rng = random.Random(5)
    accepted = 0
    for _ in range(150):
        doc = {"strategy": gen_doc(rng)}
        if validator_accepts(doc):
            accepted += 1
            assert schema_accepts(doc), doc
    assert accepted > 10
