"""``harness tune --guide simulate``: search the simulator first, then measure where it points.

1. The experiment's profile is loaded (or measured once and saved, see ``harness profile``), and
   the simulator predicts each config through ``harness.sim.guide.Predictor``.
2. Optuna searches the experiment's own space against those predictions (same ``suggest``, same
   SLO rule as the real study, ``loop.score``, thousands of times cheaper).
3. The real trials go, in this order, to: the predicted best configs, the predicted Pareto front
   (throughput up, p99 down: the safer points when the prediction is optimistic), and the
   one-step neighbours of the best few. Predicted feasibility keeps a margin under the SLO
   (``MARGIN``), because the simulator is a model and the machine is noisy.
4. Every real trial carries its prediction (``predicted_*`` user attributes and columns in
   trials.csv), so the prediction's error is visible per trial.
"""

from __future__ import annotations

import dataclasses
import math
import time

from harness.config import Experiment
from harness.tuning.loop import constrain, score
from harness.tuning.space import TrialConfig, config_key, neighbours, suggest

MARGIN = 0.15  # predicted p99 must be under (1 - MARGIN) x SLO to count as feasible
SIM_TRIALS = 400


class GuidedSearch:
    """The simulator's picks for a study's real trials. ``predictor``: anything with
    ``predict(batching, users) -> dict`` of ``predicted_*`` figures (``harness.sim.guide``)."""

    def __init__(self, exp: Experiment, predictor, cores: int, echo=print) -> None:
        self.exp = exp
        self.predictor = predictor
        self.cores = cores
        self.echo = echo
        # the SLO a prediction must keep: the study's, with a margin for the model's error
        self.slo = dataclasses.replace(exp.slo, p99_ms=exp.slo.p99_ms * (1 - MARGIN))

    def _score(self, pred: dict):
        """The study's SLO rule on a prediction: p99 without collection pauses (with them,
        whether a pause lands in a measurement's p99 is luck) under the margin SLO."""
        figures = {
            "items_per_s": pred["predicted_items_per_s"],
            "p99_ms": pred.get("predicted_p99_bound_ms", pred["predicted_p99_no_pause_ms"]),
            "error_rate": pred["predicted_error_rate"],
        }
        return score(figures, self.slo)

    def predict(self, cfg: TrialConfig) -> dict:
        """The ``predicted_*`` figures of one config, with ``predicted_feasible``."""
        pred = dict(self.predictor.predict(cfg.batching, cfg.users))
        pred["predicted_feasible"] = bool(self._score(pred)[2])  # numpy bool: not JSON
        return pred

    # -- the simulated search -------------------------------------------------------------------

    def search(
        self, n_trials: int = SIM_TRIALS, seed: int | None = 0
    ) -> list[tuple[TrialConfig, dict]]:
        """Optuna over the simulator; returns every distinct config tried, with its prediction."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(60, n_trials)),
        )
        seen: dict[str, tuple[TrialConfig, dict]] = {}

        def objective(trial):
            cfg = suggest(trial, self.exp.search, self.cores)
            pred = self.predict(cfg)
            seen.setdefault(config_key(cfg.as_dict()), (cfg, pred))
            values, constraints, _ = self._score(pred)
            constrain(trial, constraints)
            return values[0]

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
        feasible = _ranked([(c, p) for c, p in tried if p["predicted_feasible"]])
        out: list[tuple[TrialConfig, dict, str]] = []
        keys: set[str] = set()

        def add(cfg, pred, why) -> None:
            k = config_key(cfg.as_dict())
            if k not in keys and len(out) < n:
                keys.add(k)
                out.append((cfg, pred, why))

        top = _spread_best(feasible, max(1, (n + 1) // 2))
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

    # -- the tuner's hooks (harness.tuning.study calls these when --guide simulate is on) -------

    def enqueue(self, study, n_trials: int, seed: int | None = 0) -> None:
        """Enqueue the real trials the simulator points at, each with its prediction."""
        picks = self.candidates(n_trials, seed=seed)
        self.echo(f"the simulator's picks for {len(picks)} real trials:")
        for cfg, pred, why in picks:
            self.echo(f"  {cfg.describe():45} {describe_prediction(pred)}  [{why}]")
            study.enqueue_trial({}, user_attrs={"config": cfg.as_dict(), "guided": why, **pred})

    def attach_prediction(self, trial, cfg: TrialConfig) -> None:
        """A trial the sampler chose (beyond the simulator's picks) gets its prediction too."""
        for k, v in self.predict(cfg).items():
            trial.set_user_attr(k, v)


def _ranked(feasible: list) -> list:
    """Best predicted throughput first, near-ties (within 2%: noise to the simulator) by the
    lower p99."""
    feasible = sorted(feasible, key=lambda cp: -cp[1]["predicted_items_per_s"])
    return sorted(
        feasible,
        key=lambda cp: (
            -round(math.log(max(cp[1]["predicted_items_per_s"], 1e-9)) / math.log(1.02)),
            _p99(cp[1]) or math.inf,
        ),
    )


def _spread_best(ranked: list, count: int) -> list:
    """The first ``count`` of ``ranked``, spread out: at most two share a max_batch_size."""
    top, per_mbs = [], {}
    for c, p in ranked:
        mbs = c.batching.max_batch_size if c.batching else 0
        if per_mbs.get(mbs, 0) < 2 and len(top) < count:
            per_mbs[mbs] = per_mbs.get(mbs, 0) + 1
            top.append((c, p))
    return top


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


def describe_prediction(pred: dict) -> str:
    p99 = pred.get("predicted_p99_ms")
    return f"predicted {pred['predicted_items_per_s']:.0f} items/s, p99 {p99 if p99 is None else f'{p99:.1f}'} ms"


def make_guided(exp: Experiment, cores: int, echo=print) -> GuidedSearch:
    """The guided search with the experiment's profile (measured first when there is none)."""
    from harness.sim.guide import Predictor
    from harness.tuning.profiling import ensure_profile

    predictor = Predictor(exp, ensure_profile(exp, echo=echo), cores)
    return GuidedSearch(exp, predictor, cores, echo)
