"""Learned environment models and the planners that use them (the `planner` agent's building blocks)."""
