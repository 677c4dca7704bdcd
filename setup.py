"""For tools that still look for a setup.py: the project is described in pyproject.toml."""

from setuptools import setup

setup()
