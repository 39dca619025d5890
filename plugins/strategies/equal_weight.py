"""equal_weight: hold every name with a bar, in equal weights, rebalanced on the portfolio's schedule."""

from __future__ import annotations

from ...core.portfolio_strategy import PortfolioContext, PortfolioStrategy, Scores
from ..hookspecs import hookimpl


def weights(ctx: PortfolioContext) -> Scores:
    """Score 1 for every name with a close on the rebalance bar (NaN otherwise)."""
    xp = ctx.xp
    one = ctx.at_rows(xp.where(xp.isnan(ctx.close), xp.nan, 1.0))
    return Scores(xp.repeat(one[:, :, None], ctx.n_combos, axis=2))


STRATEGY = PortfolioStrategy(
    name="equal_weight",
    description="Equal weight: on each rebalance, hold every name that has a bar, each at 1 / (number of names).",
    params=(),
    weights=weights,
    select="all",
    weighting="equal",
    tags=("portfolio", "benchmark"),
)


@hookimpl
def register_strategies() -> list[PortfolioStrategy]:
    return [STRATEGY]
