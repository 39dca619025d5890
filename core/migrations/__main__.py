"""``python -m gpu_backtest.core.migrations [alembic.ini] [DATABASE URL]``: write an alembic.ini
pointing at these migrations, for the ``alembic`` command while developing."""

import sys

from . import write_ini

if __name__ == "__main__":
    args = sys.argv[1:]
    path = write_ini(args[0] if args else "alembic.ini", *args[1:2])
    print(f"wrote {path}; e.g. alembic -c {path} history")
