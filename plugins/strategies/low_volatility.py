"""low_volatility: hold the `top_n` names with the lowest volatility of their last `lookback` log returns."""

from __future__ import annotations

from ...core import portfolio_rules as rules
from ...core.portfolio_strategy import PortfolioContext, PortfolioStrategy, Scores
from ...core.strategy import Param
from ..hookspecs import hookimpl


def weights(ctx: PortfolioContext) -> Scores:
    """Score ``−σ`` (sample standard deviation of the last ``lookback`` log returns)."""
    xp = ctx.xp
    score = ctx.per_combo("low_volatility", lambda lb: rules.low_volatility(xp, ctx.close, lb)[:, :, 0], "lookback")
    return Scores(score, n=ctx.param("top_n"))


STRATEGY = PortfolioStrategy(
    name="low_volatility",
    description="Low volatility: on each rebalance, hold the `top_n` names whose last `lookback` daily "
    "log returns were the least volatile (equal weights by default).",
    params=(
        Param("lookback", int, 60, min=2, max=10_000, description="volatility window (returns)"),
        Param("top_n", int, 10, min=1, max=100_000, description="names held"),
    ),
    weights=weights,
    select="top_n",
    weighting="equal",
    tags=("portfolio", "low-volatility"),
)


@hookimpl
def register_strategies() -> list[PortfolioStrategy]:
    return [STRATEGY]
