"""A job's HTML report: one self-contained, offline page (plotly.js embedded once, no CDN).

`build_report` takes what a finished job holds — its ``info`` and ``top`` rows (the summary),
its top-k ``details`` (equity curves, trades, holdings) and, for sweeps, its result table as
batches of rows — and returns the page as text. It never sees an HTTP request, so the server
(``GET /backtest/{id}/report``) and the command line (``gpu-backtest run --report``) build the
same page. Charts are Plotly figures written as JSON data (no Python-side figure objects: a
180,000-column sweep's page builds in well under a second); every number a chart derives
(drawdown, monthly returns, rolling Sharpe, the sweep's heat-maps and histogram) is defined in
docs/report.md. Everything user-provided (strategy names, symbols, parameter values) is
HTML-escaped, in the page and in the chart labels (Plotly renders a subset of HTML in them).
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

MAX_POINTS = 5000  # an equity curve longer than this is thinned to every k-th bar (and the last)
MAX_TRADES_SHOWN = 500  # rows of the trades table (the P&L histogram uses every trade)
HIST_BINS = 60
MAX_SLICES = 50  # a third parameter with at most this many values gets a slice selector on the heat-maps
HEADLINE = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "calmar", "annual_volatility",
            "num_trades", "win_rate", "profit_factor", "turnover", "avg_holdings", "final_equity")
PERCENT = {"total_return", "cagr", "max_drawdown", "annual_volatility", "win_rate", "exposure", "best_trade",
           "worst_trade"}


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js as shipped in the installed ``plotly`` package (embedded once per page)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes too)."""
    return html.escape(str(value), quote=True)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _floats(a: Any) -> list[float | None]:
    arr = np.asarray(a, dtype=np.float64)
    return [float(x) if math.isfinite(x) else None for x in arr.tolist()]


def fmt(name: str, v: Any) -> str:
    """A metric's display text (fractions of PERCENT metrics as %)."""
    f = _num(v)
    if f is None:
        return "–"
    if name in PERCENT:
        return f"{f * 100:.2f} %"
    if name in ("num_trades", "max_drawdown_duration", "num_open_trades") and f.is_integer():
        return f"{int(f)}"
    return f"{f:,.2f}" if abs(f) >= 1000 else f"{f:.4g}"


def _script_json(doc: Any) -> str:
    """JSON safe inside a <script> element (no '<', '>' or '&' that could end it)."""
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# -- series derived from an equity curve (docs/report.md) -------------------------------------
def equity_series(detail: dict[str, Any]) -> pd.Series | None:
    """The detail's equity curve as a Series on a UTC DatetimeIndex (None when it has none)."""
    eq = detail.get("equity") if isinstance(detail, dict) else None
    if not isinstance(eq, dict) or not eq.get("time"):
        return None
    idx = pd.to_datetime(pd.Series(eq["time"]), utc=True)
    return pd.Series(np.asarray([np.nan if v is None else v for v in eq["value"]], dtype=np.float64),
                     index=pd.DatetimeIndex(idx))


def drawdown(equity: pd.Series, init_cash: float | None = None) -> pd.Series:
    """``E_t / peak_t − 1`` with the running peak starting at ``init_cash`` (docs/metrics.md)."""
    values = equity.to_numpy(dtype=np.float64)
    start = init_cash if init_cash is not None else (values[0] if len(values) else 0.0)
    peak = np.fmax.accumulate(np.concatenate([[start], values]))[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, values / peak - 1.0, np.nan)
    return pd.Series(dd, index=equity.index)


def bar_returns(equity: pd.Series, init_cash: float | None = None) -> pd.Series:
    """``r_t = E_t / E_{t−1} − 1`` with ``E_{−1} = init_cash`` (0 when ``E_{t−1} ≤ 0``)."""
    values = equity.to_numpy(dtype=np.float64)
    prev = np.concatenate([[init_cash if init_cash is not None else values[0]], values[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, values / prev - 1.0, 0.0)
    return pd.Series(r, index=equity.index)


def monthly_returns(equity: pd.Series, init_cash: float | None = None) -> pd.DataFrame:
    """Calendar-month returns (rows: years, columns: months 1–12): the month's last equity over
    the previous month's last (the first month: over ``init_cash``, else the first bar's equity)."""
    naive = equity.tz_convert("UTC").tz_localize(None) if equity.index.tz is not None else equity
    last = naive.groupby(naive.index.to_period("M")).last()
    base = init_cash if init_cash is not None else float(equity.iloc[0])
    prev = np.concatenate([[base], last.to_numpy()[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.where(prev > 0, last.to_numpy() / prev - 1.0, np.nan)
    df = pd.DataFrame({"year": last.index.year, "month": last.index.month, "ret": ret})
    return df.pivot(index="year", columns="month", values="ret").reindex(columns=range(1, 13))


def rolling_sharpe(returns: pd.Series, window: int, periods_per_year: float, risk_free: float = 0.0) -> pd.Series:
    """``mean(x) / std(x) × sqrt(P)`` over the last ``window`` bars (ddof 1, ``x = r − rf``); NaN
    while the window is not full or its std is 0."""
    x = returns - risk_free
    mean = x.rolling(window).mean()
    std = x.rolling(window).std(ddof=1)
    out = mean / std.where(std > 0) * math.sqrt(periods_per_year)
    return out


def _thin(n: int) -> np.ndarray:
    """Indices of at most MAX_POINTS bars: every k-th and the last."""
    if n <= MAX_POINTS:
        return np.arange(n)
    step = math.ceil(n / MAX_POINTS)
    idx = np.arange(0, n, step)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


def _times(index: pd.DatetimeIndex, idx: np.ndarray) -> list[str]:
    return [t.isoformat() for t in index[idx]]


def benchmark_curve(engine: Any, spec: Any, info: dict[str, Any], detail: dict[str, Any] | None,
                    data: Any = None) -> dict[str, Any] | None:
    """The spec's benchmark (``metrics.benchmark``) on the equity curve's bars: ``{"symbol",
    "returns"}``, its simple close-to-close returns as alpha/beta use them (core/loaders.py,
    0 where undefined). None without a benchmark or an equity curve. ``engine``: an `Engine`
    (its data service reads the store, or ``data`` as a run took it); the run's first and last
    bar pinned (``info.start``/``info.end``)."""
    from .loaders import StoreLoader, benchmark_returns
    from .spec import BacktestSpec

    eq = equity_series(detail or {})
    doc = BacktestSpec.from_dict(spec).to_dict()
    if eq is None or not (doc.get("metrics") or {}).get("benchmark"):
        return None
    doc["start"] = info.get("start") or doc.get("start")
    doc["end"] = info.get("end") or doc.get("end")
    plan, loader = engine.plan(doc, data)
    bench = plan.data.benchmark
    if bench is None:
        return None
    src = loader if loader is not None else StoreLoader(plan.data)
    ns = eq.index.as_unit("ns").asi8
    return {"symbol": bench, "returns": benchmark_returns(src.series([bench])[0], ns)}


# -- the sweep's table ------------------------------------------------------------------------
def sweep_views(batches: Iterable[pd.DataFrame], rank_by: str, params: list[str], best: dict[str, Any],
                portfolio: bool = False) -> dict[str, Any]:
    """From the job's table (batches holding ``symbol``, the parameters and ``rank_by``): the
    ranking metric's histogram over every column and, for two or more parameters, its heat-maps
    over two of them (the median across symbols, and the best row's symbol), one per value of a
    third (the slice selector); further parameters are held at the best row's values. Memory:
    per row, the parameters, ``rank_by`` and one byte for "the best row's symbol" (about 25 bytes
    a row with two parameters)."""
    want = [c for c in ("symbol", *params, rank_by) if c]
    best_symbol = best.get("symbol")

    def slim(b: pd.DataFrame) -> pd.DataFrame:  # the symbol as "is the best row's symbol" (1 byte a row)
        b = b[[c for c in want if c in b.columns]]
        return b.assign(symbol=b["symbol"] == best_symbol) if "symbol" in b.columns else b

    parts = [slim(b) for b in batches]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=want)
    out: dict[str, Any] = {"n": len(table)}
    if rank_by not in table.columns or not len(table):
        return out
    values = table[rank_by].to_numpy(dtype=np.float64)
    finite = values[np.isfinite(values)]
    out["n_finite"] = len(finite)
    if len(finite):
        counts, edges = np.histogram(finite, bins=HIST_BINS)
        out["hist"] = {"counts": counts.tolist(), "edges": _floats(edges)}
        out["quantiles"] = {q: float(np.quantile(finite, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)}
    usable = [p for p in params if p in table.columns and table[p].nunique() > 1]
    if len(usable) < 2:
        if len(usable) == 1:
            p = usable[0]
            g = table.groupby(p, sort=True)[rank_by].median()
            out["line"] = {"param": p, "x": [_label(v) for v in g.index], "y": _floats(g.to_numpy())}
        return out
    usable.sort(key=lambda p: -table[p].nunique())
    px, py = sorted(usable[:2], key=lambda p: params.index(p))
    ps = usable[2] if len(usable) > 2 and table[usable[2]].nunique() <= MAX_SLICES else None
    held = {p: best["params"].get(p) for p in usable[2:] if p != ps}
    sub = table
    for p, v in held.items():
        sub = sub[sub[p] == v]
    xs, ys = sorted(sub[px].unique()), sorted(sub[py].unique())
    out["heat"] = {"x": px, "y": py, "held": held, "slice": ps, "maps": []}
    groups = [("median across symbols" if not portfolio else "every portfolio", sub)]
    if not portfolio and "symbol" in sub.columns and best_symbol is not None:
        groups.append((f"symbol {best_symbol}", sub[sub["symbol"].astype(bool)]))
    for title, frame in groups:
        def grid(f: pd.DataFrame) -> list[list[float | None]]:
            g = f.groupby([py, px], sort=True)[rank_by].median().unstack(px).reindex(index=ys, columns=xs)
            return [_floats(r) for r in g.to_numpy()]

        m: dict[str, Any] = {"title": title, "x": [_label(v) for v in xs], "y": [_label(v) for v in ys]}
        if ps is None:
            m["z"] = grid(frame)
        else:  # one grid per value of the slice parameter; the best row's value first shown
            m["slices"] = [{"value": _label(v), "z": grid(f)} for v, f in frame.groupby(ps, sort=True)]
            at = _label(best["params"].get(ps))
            m["active"] = next((i for i, sl in enumerate(m["slices"]) if sl["value"] == at), 0)
            m["z"] = m["slices"][m["active"]]["z"] if m["slices"] else []
        out["heat"]["maps"].append(m)
    return out


def _label(v: Any) -> str:
    if isinstance(v, float | np.floating) and float(v).is_integer():
        return str(int(v))
    return esc(v.item() if isinstance(v, np.generic) else v)


# -- the page ---------------------------------------------------------------------------------
class _Page:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.figs: dict[str, Any] = {}

    def add(self, text: str) -> None:
        self.parts.append(text)

    def chart(self, name: str, title: str, data: list[dict[str, Any]], layout: dict[str, Any],
              height: int = 360) -> None:
        fig_id = f"fig-{len(self.figs)}"
        base = {"title": {"text": esc(title)}, "height": height, "margin": {"l": 60, "r": 20, "t": 40, "b": 40}}
        self.figs[fig_id] = {"data": data, "layout": {**base, **layout}}
        self.add(f'<div class="chart" id="{fig_id}" data-chart="{esc(name)}"></div>')


def _metric_cards(metrics: dict[str, Any]) -> str:
    names = [m for m in HEADLINE if m in metrics] or list(metrics)[:10]
    cards = []
    for m in names:
        v = _num(metrics.get(m))
        raw = "" if v is None else repr(v)
        cards.append(f'<div class="card" data-metric="{esc(m)}" data-value="{raw}"><div class="k">{esc(m)}</div>'
                     f'<div class="v">{esc(fmt(m, v))}</div></div>')
    return '<div class="cards">' + "".join(cards) + "</div>"


def _kv_table(doc: dict[str, Any]) -> str:
    def text(k: str, v: Any) -> str:
        return fmt(k, v) if _num(v) is not None and not isinstance(v, bool) else "–" if v is None else str(v)

    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(text(k, v))}</td></tr>"
                   for k, v in doc.items() if not isinstance(v, dict | list))
    return f'<table class="kv">{rows}</table>'


def _curve_section(page: _Page, detail: dict[str, Any], info: dict[str, Any], init_cash: float | None,
                   risk_free: float, benchmark: dict[str, Any] | None = None) -> None:
    eq = equity_series(detail)
    if eq is None or not len(eq):
        page.add('<p class="note">This job stored no equity curve (spec output.equity_curves false).</p>')
        return
    idx = _thin(len(eq))
    t = _times(eq.index, idx)
    dd = drawdown(eq, init_cash)
    extra = []
    if benchmark is not None and len(benchmark["returns"]) == len(eq):
        base = init_cash if init_cash is not None else float(eq.iloc[0])
        curve = base * np.cumprod(1.0 + np.asarray(benchmark["returns"], dtype=np.float64))
        extra.append({"type": "scatter", "mode": "lines", "name": esc(f"benchmark {benchmark['symbol']}"), "x": t,
                      "y": _floats(curve[idx]), "line": {"color": "#7f7f7f", "dash": "dot"}})
    page.chart("equity", "Equity and drawdown" + (" (dotted: the benchmark, same starting cash)" if extra else ""), [
        *extra,
        {"type": "scatter", "mode": "lines", "name": "equity", "x": t, "y": _floats(eq.to_numpy()[idx]),
         "line": {"color": "#1f77b4"}},
        {"type": "scatter", "mode": "lines", "name": "drawdown", "x": t, "y": _floats(dd.to_numpy()[idx]),
         "xaxis": "x", "yaxis": "y2", "fill": "tozeroy", "line": {"color": "#d62728"}}],
        {"grid": {"rows": 2, "columns": 1, "pattern": "coupled"}, "yaxis": {"domain": [0.35, 1], "title": "equity"},
         "yaxis2": {"domain": [0, 0.28], "title": "drawdown", "tickformat": ".0%"}, "showlegend": bool(extra),
         "legend": {"orientation": "h", "x": 0, "y": -0.1}, "margin": {"l": 60, "r": 20, "t": 40, "b": 70}},
        height=480)
    mr = monthly_returns(eq, init_cash)
    page.chart("monthly", "Monthly returns", [{
        "type": "heatmap", "x": [f"{m:02d}" for m in mr.columns], "y": [str(y) for y in mr.index],
        "z": [_floats(r) for r in mr.to_numpy()], "colorscale": "RdBu", "reversescale": True, "zmid": 0,
        "xgap": 1, "ygap": 1,
        "hovertemplate": "%{y}-%{x}: %{z:.2%}<extra></extra>"}],
        {"yaxis": {"type": "category", "autorange": "reversed"}, "xaxis": {"type": "category"}},
        height=max(240, 40 + 22 * len(mr)))
    ppy = float(info.get("periods_per_year") or 252.0)
    window = max(2, round(ppy / 2))
    rs = rolling_sharpe(bar_returns(eq, init_cash), window, ppy, risk_free)
    page.chart("rolling_sharpe", f"Rolling Sharpe ({window} bars)", [
        {"type": "scatter", "mode": "lines", "name": "rolling Sharpe", "x": t, "y": _floats(rs.to_numpy()[idx])}],
        {"showlegend": False})


def _trades_section(page: _Page, trades: list[dict[str, Any]]) -> None:
    if not trades:
        page.add('<p class="note">No trades.</p>')
        return
    rets = [t.get("return") for t in trades]
    page.chart("pnl", f"Trade returns ({len(trades)} trades)", [
        {"type": "histogram", "x": _floats([np.nan if r is None else r for r in rets]), "nbinsx": 40,
         "marker": {"color": "#2ca02c"}}], {"xaxis": {"tickformat": ".0%", "title": "return"}, "bargap": 0.05},
        height=300)
    cols = ("symbol", "direction", "entry_time", "exit_time", "size", "entry_price", "exit_price", "pnl", "return",
            "exit_reason")
    cols = tuple(c for c in cols if any(c in t for t in trades[:50]))
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for tr in trades[:MAX_TRADES_SHOWN]:
        cells = []
        for c in cols:
            v = tr.get(c)
            text = (f"{v * 100:.2f} %" if c == "return" and _num(v) is not None else
                    fmt(c, v) if isinstance(v, float) else str(v)[:19] if "time" in c else v)
            cells.append(f"<td>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (f'<p class="note">First {MAX_TRADES_SHOWN} of {len(trades)} trades.</p>'
            if len(trades) > MAX_TRADES_SHOWN else "")
    page.add(f'<details><summary>Trades</summary><table class="rows"><thead><tr>{head}</tr></thead>'
             f'<tbody>{"".join(body)}</tbody></table>{more}</details>')


def _holdings_section(page: _Page, holdings: list[dict[str, Any]]) -> None:
    if not holdings:
        return
    symbols = sorted({s for h in holdings for s in (h.get("weights") or {})})
    times = [h["time"] for h in holdings]
    data = [{"type": "scatter", "mode": "lines", "stackgroup": "w", "name": esc(s), "x": times,
             "y": _floats([(h.get("weights") or {}).get(s, 0.0) for h in holdings]), "line": {"shape": "hv"}}
            for s in symbols[:60]]
    page.chart("holdings", "Holdings (weight after each rebalance)", data, {"yaxis": {"tickformat": ".0%"}},
               height=400)


def _walk_forward_section(page: _Page, wf: dict[str, Any]) -> None:
    rank_by = wf.get("rank_by", "")
    labels, ins, oos = [], [], []
    for f in wf.get("folds") or []:
        for r in f.get("symbols") or []:
            labels.append(esc(f"fold {f.get('fold')} {r.get('symbol')}"))
            ins.append(_num((r.get("in_sample") or {}).get(rank_by)))
            oos.append(_num((r.get("out_of_sample") or {}).get(rank_by)))
    page.add(f"<h2>Walk-forward: in- vs out-of-sample {esc(rank_by)}</h2>")
    page.chart("walk_forward", f"{rank_by} per fold", [
        {"type": "bar", "name": "in-sample", "x": labels, "y": ins},
        {"type": "bar", "name": "out-of-sample", "x": labels, "y": oos}], {"barmode": "group"})
    page.add(_kv_table({k: v for k, v in wf.items() if k in ("n_folds", "anchored", "mean_efficiency", "choose")}))


def _sweep_section(page: _Page, views: dict[str, Any], rank_by: str) -> None:
    heat = views.get("heat")
    if heat:
        held = ", ".join(f"{k} = {v}" for k, v in heat["held"].items())
        pick = (f'<p class="note">The selector above each map picks the value of {esc(heat["slice"])}.</p>'
                if heat.get("slice") else "")
        page.add(f"<h2>{esc(rank_by)} over {esc(heat['x'])} × {esc(heat['y'])}</h2>" + pick
                 + (f'<p class="note">Other parameters held at the best row\'s values: {esc(held)}.</p>'
                    if held else ""))
        for i, m in enumerate(heat["maps"]):
            layout: dict[str, Any] = {"xaxis": {"type": "category", "title": esc(heat["x"])},
                                      "yaxis": {"type": "category", "title": esc(heat["y"])}}
            if m.get("slices"):  # the slice selector: a dropdown restyling z
                layout["updatemenus"] = [{"type": "dropdown", "x": 1.0, "y": 1.15, "xanchor": "right",
                                          "active": m["active"], "buttons": [
                                              {"method": "restyle", "label": f"{esc(heat['slice'])} = {sl['value']}",
                                               "args": [{"z": [sl["z"]]}]} for sl in m["slices"]]}]
            page.chart(f"heat_{i}", f"{rank_by}: {m['title']}", [{
                "type": "heatmap", "x": m["x"], "y": m["y"], "z": m["z"], "colorscale": "Viridis",
                "hovertemplate": f"{esc(heat['x'])}=%{{x}} {esc(heat['y'])}=%{{y}}: %{{z:.4g}}<extra></extra>"}],
                layout)
    elif views.get("line"):
        ln = views["line"]
        page.chart("param_line", f"median {rank_by} by {ln['param']}", [
            {"type": "scatter", "mode": "lines+markers", "x": ln["x"], "y": ln["y"]}],
            {"xaxis": {"type": "category", "title": esc(ln["param"])}})
    hist = views.get("hist")
    if hist:
        e = hist["edges"]
        centers = [(a + b) / 2 if a is not None and b is not None else None for a, b in itertools.pairwise(e)]
        page.chart("distribution", f"{rank_by} across {views['n']:,} columns ({views['n_finite']:,} finite)", [
            {"type": "bar", "x": centers, "y": hist["counts"], "marker": {"color": "#9467bd"}}],
            {"bargap": 0, "xaxis": {"title": esc(rank_by)}, "yaxis": {"title": "columns"}}, height=300)


def _top_table(top: list[dict[str, Any]], column_link: Callable[[int], str] | None, portfolio: bool) -> str:
    if not top:
        return ""
    params = list(top[0].get("params") or {})
    metrics = [m for m in HEADLINE if m in (top[0].get("metrics") or {})][:7]
    head = ["rank", "column", *([] if portfolio else ["symbol"]), *params, *metrics]
    rows = []
    for r in top:
        col = r.get("column")
        link = column_link(int(col)) if column_link is not None and isinstance(col, int) else None
        cells = [esc(r.get("rank")),
                 f'<a href="{esc(link)}">{esc(col)}</a>' if link else esc(col),
                 *([] if portfolio else [esc(r.get("symbol"))]),
                 *(esc(_label((r.get("params") or {}).get(p))) for p in params),
                 *(esc(fmt(m, (r.get("metrics") or {}).get(m))) for m in metrics)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<h2>Top {len(top)} columns</h2><table class="rows top"><thead><tr>'
            + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}.cards{display:flex;flex-wrap:wrap;gap:.6em}
.card{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:8em}
.card .k{font-size:.8em;color:#666}.card .v{font-size:1.2em;font-weight:600}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:right}
th{background:#f5f5f5}.kv th{text-align:left}.note{color:#666;font-size:.9em}.chart{margin:.8em 0}
"""


def build_report(info: dict[str, Any], top: list[dict[str, Any]], details: list[dict[str, Any]], *,
                 table: Iterable[pd.DataFrame] | None = None, title: str | None = None,
                 column_link: Callable[[int], str] | None = None, init_cash: float | None = None,
                 risk_free: float = 0.0, subtitle: str | None = None,
                 benchmark: dict[str, Any] | None = None) -> str:
    """The report page (HTML text, self-contained). ``info``/``top``/``details``: the job's
    summary info, its top rows and top-k details; ``table``: the result table's batches (sweeps:
    the heat-maps and the distribution); ``column_link``: a column's report URL (the top-k
    table links to it); ``init_cash``/``risk_free``: the spec's, for drawdown and rolling Sharpe;
    ``benchmark``: `benchmark_curve`'s, drawn beside the equity."""
    page = _Page()
    portfolio = info.get("mode") == "portfolio"
    best = details[0] if details else None
    head_row = top[0] if top else (best or {})
    strategy = info.get("strategy") or "backtest"
    page.add(f"<h1>{esc(title or strategy)}</h1>")
    facts = [f"{info.get('mode', 'signals')} · {info.get('n_columns', '?')} column(s)",
             f"{info.get('n_symbols', '?')} symbol(s) × {info.get('n_combinations', '?')} combination(s)",
             f"{str(info.get('start', ''))[:10]} … {str(info.get('end', ''))[:10]}",
             f"{info.get('n_bars', '?')} bars", f"ranked by {info.get('rank_by', '?')}",
             f"backend {info.get('backend', '?')}"]
    page.add(f'<p class="sub">{esc(subtitle or " · ".join(facts))}</p>')
    if head_row:
        who = ("portfolio " + str(head_row.get("column")) if portfolio else str(head_row.get("symbol")))
        params = " ".join(f"{k}={v}" for k, v in (head_row.get("params") or {}).items())
        page.add(f'<h2>Best column: {esc(who)} <span class="note">{esc(params)}</span></h2>')
        page.add(_metric_cards(head_row.get("metrics") or (best or {}).get("metrics") or {}))
    if best is not None:
        _curve_section(page, best, info, init_cash, risk_free, benchmark)
        if portfolio or best.get("holdings"):
            _holdings_section(page, best.get("holdings") or [])
        _trades_section(page, best.get("trades") or [])
    if int(info.get("n_columns") or 1) > 1 and table is not None:
        params = list((head_row.get("params") or {}) if head_row else [])
        views = sweep_views(table, str(info.get("rank_by") or "sharpe"), params, head_row or {}, portfolio)
        _sweep_section(page, views, str(info.get("rank_by") or "sharpe"))
    if int(info.get("n_columns") or 1) > 1:
        page.add(_top_table(top, column_link, portfolio))
    if isinstance(info.get("walk_forward"), dict):
        _walk_forward_section(page, info["walk_forward"])
    if isinstance(info.get("overfitting"), dict):
        page.add("<h2>Overfitting statistics</h2>" + _kv_table(info["overfitting"]))
    body = "\n".join(page.parts)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{esc(title or strategy)}"
            f" — gpu-backtest report</title><link rel=\"icon\" href=\"data:,\"><style>{STYLE}</style>"
            f"<script>{plotly_js()}</script></head><body>\n{body}\n"
            f'<script type="application/json" id="figures">{_script_json(page.figs)}</script>\n'
            "<script>(function(){var f=JSON.parse(document.getElementById('figures').textContent);"
            "Object.keys(f).forEach(function(id){Plotly.newPlot(id,f[id].data,f[id].layout,"
            "{responsive:true,displaylogo:false});});})();</script></body></html>\n")
