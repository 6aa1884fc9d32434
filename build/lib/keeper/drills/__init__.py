"""Drills: replay a scenario against the real contracts and the real keeper on a local Anvil, record what the chain
did, and report it. keeper.drills.run has the phases, keeper.drills.record the options and the record,
keeper.drills.report the figures. Nothing is imported here, so `keeper.drills.scenario` loads without the keeper."""
