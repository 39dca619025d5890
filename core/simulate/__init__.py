"""Portfolio simulation: one per-column kernel (kernel.py) compiled for CPU (cpu.py) and GPU (cuda.py).

This package holds array code only; `core/engine.py` is the Python API over it.
"""
