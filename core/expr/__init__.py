"""The strategy expression language: strategies sent as data, compiled to the built-ins' array code.

A spec's ``strategy`` may be an object (``{"signals": {...}, "params": {...}}``, or for a
portfolio ``{"score": ...}`` / ``{"weights": ...}``) instead of a name. `parser` turns each
expression into the typed IR of `ir` (Python's ``ast`` restricted to a whitelist — nothing is
ever evaluated by Python), `compiler` turns the IR into functions over ``xp`` arrays that share
indicators across a grid like the built-ins, `limits` bounds the work, and `strategy` is the
public entry point (`expression_strategy`, `canonical`, `strategy_digest`). See
docs/strategies.md "Expression strategies".
"""

from .strategy import canonical, expression_strategy, is_expression, strategy_digest

__all__ = ["canonical", "expression_strategy", "is_expression", "strategy_digest"]
