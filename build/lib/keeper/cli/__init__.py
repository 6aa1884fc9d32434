"""Command line: `keeper run | status | drill | optimize`."""

from keeper.cli.main import main

__all__ = ["main"]
