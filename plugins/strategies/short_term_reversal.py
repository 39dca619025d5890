"""short_term_reversal: hold the `n` recent losers; with portfolio.select "long_short" also short the `n` winners."""

from __future__ import annotations

from ...core import portfolio_rules as rules
from ...core.portfolio_strategy import PortfolioContext, PortfolioStrategy, Scores
from ...core.strategy import Param
from ..hookspecs import hookimpl


def weights(ctx: PortfolioContext) -> Scores:
    """Score ``−(close[t] / close[t − lookback] − 1)``: the biggest recent losers score highest."""
    xp = ctx.xp
    score = ctx.per_combo("short_term_reversal",
                          lambda lb: rules.short_term_reversal(xp, ctx.close, lb)[:, :, 0], "lookback")
    return Scores(score, n=ctx.param("n"))


STRATEGY = PortfolioStrategy(
    name="short_term_reversal",
    description="Short-term reversal: on each rebalance, hold the `n` names with the worst `lookback`-bar "
    "return (long only); with portfolio.select \"long_short\", also short the `n` best.",
    params=(
        Param("lookback", int, 5, min=1, max=10_000, description="return horizon (bars)"),
        Param("n", int, 10, min=1, max=100_000, description="names held (per side with long_short)"),
    ),
    weights=weights,
    select="top_n",
    weighting="equal",
    tags=("portfolio", "reversal"),
)


@hookimpl
def register_strategies() -> list[PortfolioStrategy]:
    return [STRATEGY]
