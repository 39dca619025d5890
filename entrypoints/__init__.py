"""Command-line entry points: the ``gpu-backtest`` command."""
