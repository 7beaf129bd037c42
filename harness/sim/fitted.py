"""The simulator's fitted constants. Written by ``experiments/validate_simulator.py fit`` from
the calibration set (``results/simulator-validation/calibration/``), never by hand: the
validation set's errors (``validate_simulator.py report``) are then out of sample.

``fe_weight``: the request path's share of a core against one running batch (the GIL holder
plus gRPC's own runnable threads; see ``harness.sim.kernel``).
"""

FITTED = {"fe_weight": 5.0, "p99_bound": {"closed": 1.5, "open_rate": 0.6}}
# on the calibration set (11 cases, at the runs' speed): 10 of 22 targets
# met (throughput 10%, p99 20%), median |log error| 0.084
