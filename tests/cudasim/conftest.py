"""Collect the CUDA-simulator tests only in a process started with NUMBA_ENABLE_CUDASIM=1.

numba reads NUMBA_ENABLE_CUDASIM once, when it is first imported, so these tests cannot share
a process with the rest of the suite: tests/test_cudasim.py runs this directory in a
subprocess with the variable set. In any other process nothing here is even imported.
"""

import os

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore_glob = ["test_*.py"]
