"""The limits on an expression strategy (docs/strategies.md "Expression strategies" lists them).

They bound the parser's and the compiler's work whatever a request holds: the source is
measured before it is parsed, parentheses are counted before Python's parser sees them, and the
syntax tree is measured (iteratively) before anything walks it recursively.
"""

from __future__ import annotations

#: characters in one expression (checked before parsing)
MAX_SOURCE_CHARS = 2_000
#: syntax-tree nodes in one expression
MAX_NODES = 500
#: nesting depth of one expression's syntax tree (and of its parentheses)
MAX_DEPTH = 40
#: the largest window (bars) a function may take, literal or parameter
MAX_WINDOW = 10_000
#: declared parameters of one strategy
MAX_PARAMS = 16
#: characters in a parameter name
MAX_NAME_CHARS = 32
#: characters in the strategy's ``name``
MAX_STRATEGY_NAME_CHARS = 64
#: characters in the strategy's ``description``
MAX_DESCRIPTION_CHARS = 2_000
#: characters in a parameter's ``description``
MAX_PARAM_DESCRIPTION_CHARS = 500
