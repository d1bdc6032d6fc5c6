"""A shim for tools that still run setup.py: the project's metadata lives in pyproject.toml."""
from setuptools import setup

setup()
