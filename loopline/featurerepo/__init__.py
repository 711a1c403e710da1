"""Feature repos at run time: scaffolding, planning and applying their definitions."""
