"""Expression strategies refuse hostile input with a SpecError naming the field and column, run
nothing while doing so (a canary), and bound the parser's work by the limits before it parses.
Random expressions over the grammar give a SpecError or a result, never anything else."""

from __future__ import annotations

import ast
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from expr_gen import PARAMS, docs, gen_doc, gen_portfolio_doc, junk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpu_backtest.core.backend import cpu_backend
from gpu_backtest.core.config import Settings
from gpu_backtest.core.engine import Engine
from gpu_backtest.core.errors import SpecError
from gpu_backtest.core.expr import canonical, expression_strategy, limits, strategy_digest
from gpu_backtest.core.spec import BacktestSpec
from gpu_backtest.core.synthetic import gbm_panel_frame
from gpu_backtest.plugins.manager import default_registry

CANARY: list[str] = []  # a hostile expression that ran would append here


def canary_hit(*_: Any) -> None:  # what a hostile expression would try to reach
    CANARY.append("ran")


PWN = Path("/tmp/gpu_backtest_expr_canary")
HERE = "test_expr_safety"

ATTACKS: list[tuple[str, str]] = [
    (f"__import__('{HERE}').canary_hit()", "attribute access"),
    ("__import__('os').system('touch /tmp/gpu_backtest_expr_canary')", "attribute access"),
    (f"__import__('{HERE}') > 1", "unknown function '__import__'"),
    ("close.__class__.__mro__[1].__subclasses__()", "attribute access"),
    ("().__class__.__bases__[0]", "subscripts"),
    ("close[0] > 1", "subscripts"),
    ("close.real > 1", "attribute access"),
    ("import os", "syntax error"),
    ("close > 1; import os", "syntax error"),
    ("(lambda: canary_hit())()", "only the language's functions can be called"),
    ("lambda: 1", "lambda"),
    ("[canary_hit() for x in (1, 2)]", "comprehensions"),
    ("{x: 1 for x in (1,)}", "comprehensions"),
    ("10**10**10 > close", "power operator"),
    ("(" * 10_000 + "close" + ")" * 10_000, "characters long"),
    ("(" * 100 + "close > 1" + ")" * 100, "nested deeper"),
    ("-" * 1_500 + "close > 1", "nested deeper"),
    ("not " * 450 + "close > 1", "nested deeper"),
    ("close > 1 and " * 80_000 + "close > 1", "characters long"),  # ~1 MB
    ("+".join(["close"] * 300) + " > 1", "nested deeper"),
    ("max(" + ",".join(["1"] * 600) + ") > close", "syntax nodes"),
    ("\u0441lose > 1", "U+0441"),  # Cyrillic es
    ("\uff43lose > 1", "U+FF43"),  # fullwidth c (NFKC would make it 'close')
    ("close > 1\u200b", "U+200B"),  # zero-width space
    ("close >\n 1", "U+000A"),
    ("close > nan", "unknown name 'nan'"),
    ("close > inf", "unknown name 'inf'"),
    ("close > 1e999", "not finite"),
    ("close > " + "9" * 400, "not finite"),
    ("close > float('nan')", "unknown function 'float'"),
    ("eval('canary_hit()') > 0", "unknown function 'eval'"),
    ("exec('canary_hit()')", "unknown function 'exec'"),
    ("getattr(close, 'x') > 1", "unknown function 'getattr'"),
    ("open('/etc/passwd') > 1", "unknown function 'open'"),
    ("canary_hit() > 1", "unknown function 'canary_hit'"),
    ("sma(close, window=5) > 1", "keyword"),
    ("sma(**{'x': close}) > 1", "keyword"),
    ("sma(*[close, 5]) > 1", "starred"),
    ("sma(close, 5)(1) > 1", "only the language's functions"),
    ("close if close > 1 else open", "conditional"),
    ("(x := 1) > 0", "assignment"),
    ("f'{close}' > 1", "strings"),
    ("'close' > 1", "a string"),
    ("True", "True"),
    ("None", "None"),
    ("... > 1", "Ellipsis"),
    ("__builtins__ > 1", "unknown name '__builtins__'"),
    ("1 in close", "in"),
    ("close is close", "is"),
    ("~close > 1", "~"),
    ("close // 2 > 1", "//"),
    ("close % 2 > 1", "%"),
    ("close @ close > 1", "@"),
    ("sma(close, 0) > 1", "window"),
    ("sma(close, 10001) > 1", "window"),
    ("sma(close, 2.5) > 1", "window"),
    ("sma(close, fast * 2) > 1", "window"),
    ("sma(close, k) > 1", "must be declared"),
    ("sma(close) > 1", "takes 2 arguments"),
    ("rank(close) > 0", "portfolio"),
    ("close", "expected a condition"),
    ("close + (close > 1)", "needs a number"),
    ("sma > 1", "is a function"),
    ("", "empty expression"),
    ("   ", "empty expression"),
]


@pytest.fixture(autouse=True)
def _clean_canary():
    CANARY.clear()
    PWN.unlink(missing_ok=True)
    yield
    assert CANARY == [] and not PWN.exists(), "a hostile expression ran"


def doc_with(entry: Any) -> dict[str, Any]:
    return {"signals": {"entry": entry, "exit": "close < 0"}, "params": PARAMS}


@pytest.mark.parametrize(("src", "needle"), ATTACKS, ids=[f"a{i}" for i in range(len(ATTACKS))])
def test_attack_is_a_spec_error_and_runs_nothing(src: str, needle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    real = ast.parse
    monkeypatch.setattr(ast, "parse", lambda s, *a, **k: parsed.append(len(s)) or real(s, *a, **k))
    with pytest.raises(SpecError) as e:
        BacktestSpec.from_dict({"strategy": doc_with(src)})
    assert e.value.path == "strategy.signals.entry", e.value
    assert needle in e.value.reason, e.value.reason
    assert e.value.reason.startswith("column "), e.value.reason
    assert len(str(e.value)) < 1_000
    # the parser only ever sees text within the limits
    assert all(n <= limits.MAX_SOURCE_CHARS for n in parsed)
    if len(src) > limits.MAX_SOURCE_CHARS or src.count("(") > limits.MAX_DEPTH or not src.isascii():
        assert parsed == []


@pytest.mark.parametrize(("doc", "path"), [
    ("sma_crossover ", None),  # a name: not an expression, looked up later
    ({"signals": {"entry": "close > 1"}}, "strategy.signals.exit"),
    ({"signals": {"entry": "close > 1", "exit": "close < 1"}, "score": "close"}, "strategy"),
    ({"score": "close", "select": "best"}, "strategy.select"),
    ({"signals": {"entry": "close > 1", "exit": "close < 1", "short": "x"}}, "strategy.signals.short"),
    ({"signals": {"entry": "close > 1", "exit": "close < 1"}, "evil": 1}, "strategy.evil"),
    ({"signals": {"entry": 5, "exit": "close < 1"}}, "strategy.signals.entry"),
    ({"signals": {"entry": "close > a", "exit": "close < 1"}, "params": {"a": {"default": float("nan")}}},
     "strategy.params.a.default"),
    ({"signals": {"entry": "close > a", "exit": "close < 1"}, "params": {"__class__": {"default": 1}}},
     "strategy.params.__class__"),
    ({"signals": {"entry": "close > 1", "exit": "close < 1"}, "params": {"close": {"default": 1}}},
     "strategy.params.close"),
    ({"signals": {"entry": "sma(close, n) > 1", "exit": "close < 1"}, "params": {"n": {"type": "int", "default": 5,
                                                                                        "min": 0}}},
     "strategy.params.n.min"),
    ({"signals": {"entry": "close > 1", "exit": "close < 1"}, "constraint": "close > 1"}, "strategy.constraint"),
    ({"signals": {"entry": "close > 1", "exit": "close < 1"}, "params": {f"p{i}": {"default": 1} for i in range(40)}},
     "strategy.params"),
    ({"signals": {"entry": "close > 1", "exit": "close < 1"}, "name": "x" * 1000}, "strategy.name"),
])
def test_document_errors_name_the_field(doc: Any, path: str | None) -> None:
    if path is None:
        assert BacktestSpec.from_dict({"strategy": doc}).strategy == doc
        return
    with pytest.raises(SpecError) as e:
        BacktestSpec.from_dict({"strategy": doc})
    assert e.value.path == path, e.value


def test_canonical_digest_and_order() -> None:
    doc = {"signals": {"entry": "cross_above(sma(close, fast), sma(close, slow))", "exit": "close < 0"},
           "params": {"slow": {"type": "int", "default": 30}, "unused": {"default": 1},
                      "fast": {"type": "int", "default": 5}}}
    c = canonical(doc)
    assert list(c["params"]) == ["fast", "slow", "unused"]  # first use in the text, then by name
    assert c["params"]["fast"] == {"type": "int", "default": 5, "min": 1, "max": limits.MAX_WINDOW,
                                   "description": ""}
    assert c["name"] == "expression" and c["constraint"] is None
    shuffled = {**doc, "params": dict(reversed(list(doc["params"].items())))}
    assert strategy_digest(shuffled) == strategy_digest(doc) == strategy_digest(c)
    assert canonical(c) == c
    assert [p.name for p in expression_strategy(shuffled).params] == ["fast", "slow", "unused"]
    other = {**doc, "signals": {**doc["signals"], "exit": "close < 1"}}
    assert strategy_digest(other) != strategy_digest(doc)


@pytest.fixture(scope="module")
def engine() -> Engine:
    s = Settings.from_env({})
    return Engine(s, cpu_backend(s), default_registry())


@pytest.fixture(scope="module")
def small() -> Any:
    return gbm_panel_frame(2, 80, seed=3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=docs)
def test_random_grammar_expressions(engine: Engine, small: Any, doc: dict[str, Any]) -> None:
    try:
        canonical(doc)
    except SpecError as e:
        assert e.path.startswith("strategy"), e
        return
    spec = {"strategy": doc, "params": {"fast": [2, 5], "slow": [20, 30], "k": [1.0, 2.0]},
            "execution": {"direction": "both"}}
    try:
        res = engine.run(spec, small)
    except SpecError as e:  # e.g. a constraint that leaves no combination
        assert e.path in ("params",) or e.path.startswith("strategy"), e
        return
    assert len(res.table) > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_portfolio_expressions(engine: Engine, seed: int) -> None:
    doc = gen_portfolio_doc(random.Random(seed))
    try:
        canonical(doc)
    except SpecError as e:
        assert e.path.startswith("strategy"), e
        return
    data = gbm_panel_frame(5, 90, seed=seed % 1000)
    res = engine.run({"strategy": doc, "params": {"fast": [2, 5], "slow": [20], "k": [1.0]},
                      "portfolio": {"rebalance": "1w"}}, data)
    assert len(res.table) == 2


@settings(max_examples=80, deadline=None)
@given(text=junk)
def test_random_text_is_only_ever_a_spec_error(text: str) -> None:
    try:
        canonical(doc_with(text))
    except SpecError as e:
        assert e.path == "strategy.signals.entry" and e.reason.startswith("column "), e


def test_bad_expression_on_the_command_line_exits_2(tmp_path: Path) -> None:
    data = tmp_path / "bars.parquet"
    gbm_panel_frame(2, 60, seed=1).to_parquet(data)
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({"strategy": doc_with("sma(close, 5) > __import__('os')")}))
    cli = str(Path(sys.executable).parent / "gpu-backtest")
    r = subprocess.run([cli, "run", str(spec), "--data", str(data)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "strategy.signals.entry" in r.stderr and "column 17" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_seeded_generator_covers_both_outcomes() -> None:
    ok = bad = 0
    for seed in range(200):
        try:
            canonical(gen_doc(random.Random(seed)))
            ok += 1
        except SpecError:
            bad += 1
    assert ok > 20 and bad > 20
    assert np.isfinite(ok)
