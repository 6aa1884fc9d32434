"""Drills: replay a scenario against the real contracts and the real keeper on a local Anvil, record what the chain
did, and report it (keeper.drills.run has the phases; keeper.drills.report the figures)."""

from keeper.drills.record import DrillError, DrillOptions, DrillRecord
from keeper.drills.run import run_drill

__all__ = ["DrillError", "DrillOptions", "DrillRecord", "run_drill"]
