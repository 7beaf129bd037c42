"""The search: the space, one trial, the trial loop, re-measurement, the winner, and the
profile measurement the simulator reads; the only home of optuna (docs/architecture.md)."""
