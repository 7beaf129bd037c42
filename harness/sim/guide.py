"""The simulator's side of ``harness tune --guide simulate``: predictions for batching configs.

A :class:`Predictor` is built from an experiment's load settings, the model's profile and the
server's cores; ``predict(batching, users)`` runs the simulator on one config and returns the
``predicted_*`` figures a trial carries. The search over these predictions (which configs to
measure for real, and whether a prediction keeps the SLO) belongs to the tuner, which calls
this module; the simulator knows nothing of the search or of studies. The profile is measured
on the tuner's side too (``harness.tuning.profiling``): the simulator only reads one.
"""

from __future__ import annotations

import dataclasses

from harness.batching import BatchingParameters
from harness.config import Experiment
from harness.sim.fitted import FITTED


def bound_terms(terms: dict | None = None) -> dict:
    """How the guide widens the model's p99 (``FITTED["p99_bound"]``, or ``terms``), fitted on
    the calibration set. The model is optimistic about p99 where the real server's latencies
    spread wider than it captures, most of all in open loops, where the real server also runs
    nearer saturation than predicted (docs/simulator.md); a search should not pick a config on
    that optimism. ``closed``: a closed loop's p99 is the model's times this factor.
    ``open_rate``: an open loop's p99 is the model's at an arrival rate this much higher (a
    capacity margin: near saturation a factor on p99 means nothing)."""
    fitted = (FITTED.get("p99_bound") or {}) if terms is None else terms
    return {"closed": 1.0, "open_rate": 0.0, **fitted}


def workload_for(exp: Experiment, users: int | None = None, rate_scale: float = 1.0):
    from harness.sim.model import Workload

    wl = Workload.from_load(exp.load, users=users, warmup_s=2.0, window_s=10.0)
    return dataclasses.replace(wl, rate=wl.rate * rate_scale) if rate_scale != 1.0 else wl


class Predictor:
    def __init__(self, exp: Experiment, profile, cores: int) -> None:
        from harness.sim.model import ServerModel

        self.exp = exp
        self.profile = profile
        self.cores = cores
        self.server = ServerModel.from_profile(
            profile, exp.load.protocol, cores=cores, max_size=max(1024, profile.max_size())
        )
        # the same server without collection pauses: whether a pause lands in a measurement's
        # p99 is a coin flip when the requests inside the server are ~1% of those between pauses
        self.calm = dataclasses.replace(self.server, gc_every=0.0, gc_s=0.0)
        self._prepared: dict = {}
        self._cache: dict = {}

    def _prep(self, users: int | None, calm: bool = False, rate_scale: float = 1.0):
        from harness.sim.model import Prepared

        key = (users or 0, calm, rate_scale)
        if key not in self._prepared:
            srv = self.calm if calm else self.server
            self._prepared[key] = Prepared(workload_for(self.exp, users, rate_scale), srv)
        return self._prepared[key]

    def _bound(self, batching, users, base: float | None) -> float | None:
        """The p99 the guide holds to the SLO (``bound_terms``)."""
        terms = bound_terms()
        if self.exp.load.rate > 0 and terms["open_rate"] > 0:
            from harness.sim.model import simulate

            prep = self._prep(users, calm=True, rate_scale=1.0 + terms["open_rate"])
            return simulate(batching, prep).p99_ms
        return None if base is None else base * terms["closed"]

    def predict(self, batching: BatchingParameters | None, users: int | None = None) -> dict:
        """The ``predicted_*`` figures of one config (None: batching off) at ``users`` (None:
        the experiment's), cached. ``predicted_p99_no_pause_ms`` is the p99 of the same server
        without collection pauses: with them, whether a pause lands in a p99 is luck;
        ``predicted_p99_bound_ms`` is that widened by the fitted terms (``bound_terms``)."""
        from harness.sim.model import simulate

        key = (batching, users)
        if key not in self._cache:
            p = simulate(batching, self._prep(users))
            if self.server.gc_every:
                base = simulate(batching, self._prep(users, calm=True)).p99_ms
            else:
                base = p.p99_ms
            widened = self._bound(batching, users, base)
            self._cache[key] = {
                "predicted_items_per_s": round(p.items_per_s, 1),
                "predicted_p99_ms": None if p.p99_ms is None else round(p.p99_ms, 2),
                "predicted_p99_no_pause_ms": None if base is None else round(base, 2),
                # what the guide holds to the SLO: the model's p99 widened (bound_terms)
                "predicted_p99_bound_ms": None if widened is None else round(widened, 2),
                "predicted_error_rate": round(p.error_rate, 4),
                "predicted_mean_batch_size": p.mean_batch_size,
            }
        return self._cache[key]
