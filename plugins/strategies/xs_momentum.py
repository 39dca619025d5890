"""xs_momentum: hold the `top_n` names with the best `lookback`-bar return, skipping the last `skip` bars."""

from __future__ import annotations

from ...core import portfolio_rules as rules
from ...core.portfolio_strategy import PortfolioContext, PortfolioStrategy, Scores
from ...core.strategy import Param
from ..hookspecs import hookimpl


def weights(ctx: PortfolioContext) -> Scores:
    """Score ``close[t − skip] / close[t − skip − lookback] − 1`` (docs/semantics.md, "Target weights")."""
    xp = ctx.xp
    score = ctx.per_combo("xs_momentum", lambda lb, sk: rules.xs_momentum(xp, ctx.close, lb, sk)[:, :, 0],
                          "lookback", "skip")
    return Scores(score, n=ctx.param("top_n"))


STRATEGY = PortfolioStrategy(
    name="xs_momentum",
    description="Cross-sectional momentum: on each rebalance, rank the universe by the return from "
    "`skip + lookback` bars ago to `skip` bars ago and hold the best `top_n` (equal weights by default).",
    params=(
        Param("lookback", int, 252, min=1, max=10_000, description="return horizon (bars)"),
        Param("skip", int, 21, min=0, max=10_000, description="most recent bars left out (short-term reversal)"),
        Param("top_n", int, 10, min=1, max=100_000, description="names held (per side with long_short)"),
    ),
    weights=weights,
    select="top_n",
    weighting="equal",
    tags=("portfolio", "momentum"),
)


@hookimpl
def register_strategies() -> list[PortfolioStrategy]:
    return [STRATEGY]
