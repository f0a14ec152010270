"""``crossrec eval``: item-level evaluation of crossrec against standard baselines."""
