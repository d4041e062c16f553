"""The ``vitlab`` command line: a thin mirror of the Python API."""

from vitlab.cli.app import app, main

__all__ = ["app", "main"]
