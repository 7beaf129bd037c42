"""``harness tune --guide simulate``: search the simulator first, then measure where it points.

1. The experiment's profile is loaded (or measured once and saved, see ``harness profile``).
2. Optuna searches the experiment's own space against the simulator (same ``suggest``, same
   objective and constraints as the real study, thousands of times cheaper).
3. The real trials go, in this order, to: the predicted best configs, the predicted Pareto front
   (throughput up, p99 down: the safer points when the prediction is optimistic), and the
   one-step neighbours of the best few. Predicted feasibility keeps a margin under the SLO
   (``MARGIN``), because the simulator is a model and the machine is noisy.
4. Every real trial carries its prediction (``predicted_*`` user attributes and columns in
   trials.csv), so the prediction's error is visible per trial.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

from harness.config import Experiment
from harness.tuning.space import TrialConfig, neighbours, suggest

MARGIN = 0.15  # predicted p99 must be under (1 - MARGIN) x SLO to count as feasible
SIM_TRIALS = 400


def workload_for(exp: Experiment, users: int | None = None):
    from harness.sim.model import Workload

    return Workload.from_load(exp.load, users=users, warmup_s=2.0, window_s=10.0)


class Guide:
    def __init__(self, exp: Experiment, profile, cores: int, echo=print) -> None:
        from harness.sim.model import ServerModel

        self.exp = exp
        self.profile = profile
        self.cores = cores
        self.echo = echo
        self.server = ServerModel.from_profile(
            profile, exp.load.protocol, cores=cores, max_size=max(1024, profile.max_size())
        )
        # the same server without collection pauses: whether a pause lands in a measurement's
        # p99 is a coin flip when the requests inside the server are ~1% of those between pauses
        self.calm = dataclasses.replace(self.server, gc_every=0.0, gc_s=0.0)
        self._prepared: dict = {}
        self._cache: dict[str, dict] = {}

    # -- predictions ----------------------------------------------------------------------------

    def _prep(self, users: int | None, calm: bool = False):
        from harness.sim.model import Prepared

        key = (users or 0, calm)
        if key not in self._prepared:
            srv = self.calm if calm else self.server
            self._prepared[key] = Prepared(workload_for(self.exp, users), srv)
        return self._prepared[key]

    def predict(self, cfg: TrialConfig) -> dict:
        """The ``predicted_*`` figures for one config (cached)."""
        from harness.sim.model import simulate

        key = json.dumps(cfg.as_dict(), sort_keys=True)
        if key not in self._cache:
            p = simulate(cfg.batching, self._prep(cfg.users))
            slo = self.exp.slo
            if self.server.gc_every:
                base = simulate(cfg.batching, self._prep(cfg.users, calm=True)).p99_ms
            else:
                base = p.p99_ms
            # feasible when the p99 fits without a pause landing in it: with pauses it is luck
            p99 = base if base is not None else math.inf
            self._cache[key] = {
                "predicted_items_per_s": round(p.items_per_s, 1),
                "predicted_p99_ms": None if p.p99_ms is None else round(p.p99_ms, 2),
                "predicted_p99_no_pause_ms": None if base is None else round(base, 2),
                "predicted_error_rate": round(p.error_rate, 4),
                "predicted_mean_batch_size": p.mean_batch_size,
                "predicted_feasible": p99 <= slo.p99_ms * (1 - MARGIN)
                and p.error_rate <= slo.max_error_rate,
            }
        return self._cache[key]

    # -- the simulated search -------------------------------------------------------------------

    def search(
        self, n_trials: int = SIM_TRIALS, seed: int | None = 0
    ) -> list[tuple[TrialConfig, dict]]:
        """Optuna over the simulator; returns every distinct config tried, with its prediction."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        slo = self.exp.slo
        space = self.exp.search
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(60, n_trials)),
        )
        seen: dict[str, tuple[TrialConfig, dict]] = {}

        def objective(trial):
            cfg = suggest(trial, space, self.cores)
            pred = self.predict(cfg)
            seen.setdefault(json.dumps(cfg.as_dict(), sort_keys=True), (cfg, pred))
            p99 = pred["predicted_p99_no_pause_ms"]
            p99 = p99 if p99 is not None else 1e9
            trial.set_constraint("p99", p99 - slo.p99_ms * (1 - MARGIN))
            trial.set_constraint("errors", pred["predicted_error_rate"] - slo.max_error_rate)
            return pred["predicted_items_per_s"]

        t = time.monotonic()
        study.optimize(objective, n_trials=n_trials)
        self.echo(
            f"simulated {n_trials} trials ({len(seen)} distinct configs) in "
            f"{time.monotonic() - t:.1f}s"
        )
        return list(seen.values())

    def candidates(
        self, n: int, seed: int | None = 0, sim_trials: int = SIM_TRIALS
    ) -> list[tuple[TrialConfig, dict, str]]:
        """Up to ``n`` configs for real trials: (config, prediction, why)."""
        tried = self.search(sim_trials, seed)
        feasible = [(c, p) for c, p in tried if p["predicted_feasible"]]
        feasible.sort(key=lambda cp: -cp[1]["predicted_items_per_s"])
        out: list[tuple[TrialConfig, dict, str]] = []
        keys: set[str] = set()

        def add(cfg, pred, why) -> None:
            k = json.dumps(cfg.as_dict(), sort_keys=True)
            if k not in keys and len(out) < n:
                keys.add(k)
                out.append((cfg, pred, why))

        # the predicted best half of the budget, spread out: near-ties (within 2%) are noise to
        # the simulator, so at most two picks share a max_batch_size
        feasible.sort(
            key=lambda cp: (
                -round(math.log(max(cp[1]["predicted_items_per_s"], 1e-9)) / math.log(1.02)),
                _p99(cp[1]) or math.inf,
            )
        )
        top, per_mbs = [], {}
        for c, p in feasible:
            mbs = c.batching.max_batch_size if c.batching else 0
            if per_mbs.get(mbs, 0) < 2 and len(top) < max(1, (n + 1) // 2):
                per_mbs[mbs] = per_mbs.get(mbs, 0) + 1
                top.append((c, p))
        for i, (c, p) in enumerate(top):
            add(c, p, f"predicted best #{i + 1}")
        for c, p in pareto(tried):
            if len(out) >= n - max(1, n // 4):
                break
            add(c, p, "predicted Pareto front")
        for c, _ in top[:3]:
            for nb in neighbours(c, self.exp.search, self.cores):
                pred = self.predict(nb)
                if pred["predicted_feasible"]:
                    add(nb, pred, "neighbour of a predicted best")
        for c, p in feasible:  # still room: the next best predictions
            add(c, p, "predicted next best")
        # still room (few predicted feasible): the lowest predicted p99 first
        tried.sort(key=lambda cp: cp[1]["predicted_p99_no_pause_ms"] or math.inf)
        for c, p in tried:
            add(c, p, "lowest predicted p99")
        return out


def _p99(pred: dict) -> float | None:
    v = pred.get("predicted_p99_no_pause_ms")
    return v if v is not None else pred.get("predicted_p99_ms")


def pareto(tried: list[tuple[TrialConfig, dict]]) -> list[tuple[TrialConfig, dict]]:
    """Configs no other beats on both throughput and p99 (without pauses), among those within
    the error limit; highest throughput first."""
    pts = [(c, p) for c, p in tried if _p99(p) is not None and p["predicted_error_rate"] <= 0.01]
    pts.sort(key=lambda cp: (-cp[1]["predicted_items_per_s"], _p99(cp[1])))
    front, best_p99 = [], math.inf
    for c, p in pts:
        if _p99(p) < best_p99:
            front.append((c, p))
            best_p99 = _p99(p)
    return front


def make_guide(exp: Experiment, cores: int, echo=print) -> Guide:
    """The guide with the experiment's profile, measuring it first when there is none."""
    from harness.sim.measure import ensure_profile

    prof = ensure_profile(exp, echo=echo)
    return Guide(exp, prof, cores, echo)


def describe_prediction(pred: dict) -> str:
    p99 = pred.get("predicted_p99_ms")
    return f"predicted {pred['predicted_items_per_s']:.0f} items/s, p99 {p99 if p99 is None else f'{p99:.1f}'} ms"


# -- the tuner's hooks (harness.tuning.study calls these when --guide simulate is on) ----------


def tuner_guide(tuner) -> Guide:
    if getattr(tuner, "guide", None) is None:
        tuner.guide = make_guide(tuner.exp, tuner._cores(), tuner.echo)
    return tuner.guide


def enqueue_guided(tuner, n_trials: int) -> None:
    """Enqueue the real trials the simulator points at, each with its prediction."""
    guide = tuner_guide(tuner)
    picks = guide.candidates(n_trials, seed=tuner.exp.study.seed)
    tuner.echo(f"the simulator's picks for {len(picks)} real trials:")
    for cfg, pred, why in picks:
        tuner.echo(f"  {cfg.describe():45} {describe_prediction(pred)}  [{why}]")
        tuner.study.enqueue_trial({}, user_attrs={"config": cfg.as_dict(), "guided": why, **pred})


def attach_prediction(tuner, trial, cfg: TrialConfig) -> None:
    """A trial the sampler chose (beyond the simulator's picks) gets its prediction too."""
    for k, v in tuner_guide(tuner).predict(cfg).items():
        trial.set_user_attr(k, v)
