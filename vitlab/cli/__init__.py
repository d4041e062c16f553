"""The ``vitlab`` command line: a thin mirror of the Python API.

:mod:`vitlab.cli.options` holds the Typer app and the shared options; each verb module registers
its commands on it when imported here (one direction only: no verb module imports this package).

Example:
    >>> {"eval", "compare", "mil", "tune", "inspect", "robust", "curate", "pretrain", "distill", "explore"} <= {c.name for c in app.registered_commands}
    True
"""

from vitlab.cli import (core_cmds, curate_cmds, eval_cmds, explore_cmds, gen_cmds, inspect_cmds,  # noqa: F401
                        mil_cmds, perf_cmds, pretrain_cmds, tune_cmds)  # (importing registers the verbs)
from vitlab.cli.options import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point (``vitlab``)."""
    app()
