"""inverse_volatility: hold every name with a known volatility, weighted by 1 / volatility."""

from __future__ import annotations

from ...core import portfolio_rules as rules
from ...core.portfolio_strategy import PortfolioContext, PortfolioStrategy, Scores
from ...core.strategy import Param
from ..hookspecs import hookimpl


def weights(ctx: PortfolioContext) -> Scores:
    """Every name with a finite positive ``σ`` (last ``lookback`` log returns) is eligible; weighted ∝ 1/σ."""
    xp = ctx.xp
    vol = ctx.per_combo("volatility", lambda lb: rules.volatility(xp, ctx.close, lb)[:, :, 0], "lookback")
    scores = xp.where(xp.isfinite(vol) & (vol > 0.0), 1.0, xp.nan)
    return Scores(scores, volatility=vol)


STRATEGY = PortfolioStrategy(
    name="inverse_volatility",
    description="Inverse volatility (naive risk parity): on each rebalance, hold every name whose last "
    "`lookback` log returns have a positive volatility σ, weighted in proportion to 1 / σ.",
    params=(
        Param("lookback", int, 60, min=2, max=10_000, description="volatility window (returns)"),
    ),
    weights=weights,
    select="all",
    weighting="inverse_volatility",
    tags=("portfolio", "risk-parity"),
)


@hookimpl
def register_strategies() -> list[PortfolioStrategy]:
    return [STRATEGY]
