"""setuptools shim for tools that still call setup.py; the configuration lives in pyproject.toml."""

from setuptools import setup

if __name__ == "__main__":
    setup()
