"""The trial loop, safe for several tuners sharing one study (Optuna's ask-and-tell), and the
SLO rule every measurement is judged by.

Each tuner runs the same loop against the shared storage. Under the study lock it counts the
trials that exist (the budget is the study's, not each tuner's), enqueues the baselines once,
asks for a trial and picks its config. A config already measured in the study, or being measured
by another tuner right now, is not measured again: the new trial takes that trial's figures and
says so (``duplicate_of``); re-measuring is the winner step's job. A copy costs no measurement
and does not count against the trial budget; instead, an unexplored neighbour of the repeated
config is enqueued (see ``space.neighbours``), so a sampler that has settled on one config spends
the next trial on the configs around it. Measuring happens outside the lock, with Optuna's
heartbeat running so that a killed tuner's trial is failed for everyone.

The loop knows nothing of servers: :func:`run_trials` takes the measuring (``objective``), the
first trials (``enqueue_first``) and the progress report (``after_trial``) as functions, so the
tuner and the replay benchmarks (experiments/tuning_efficiency.py) run the same loop.
:func:`score` is the SLO rule, the one place it is written; :func:`record` puts a measurement and
its verdict on a trial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import socket
import time
import warnings
from collections.abc import Callable

from harness.config import SearchConfig, SloConfig
from harness.errors import HarnessError
from harness.procs import pid_alive
from harness.tuning.space import (
    TrialConfig,
    baselines,
    config_key,
    neighbours,
    params_for,
    suggest,
)

DUPLICATE_POLL_S = 2.0
# an unknown p99 (nothing answered) as a constraint value the sampler can still compare
CONSTRAINT_CAP = 1e9


# -- the SLO rule -------------------------------------------------------------------------------


def score(result: dict, slo: SloConfig, mode: str = "constrained") -> tuple[list, list, bool]:
    """``(values, constraints, feasible)`` of one measurement (``items_per_s``, ``p99_ms``,
    ``error_rate``): the objective values Optuna is told (throughput; and p99 in pareto mode),
    how far p99 and the error rate are over the SLO (<= 0: within it), and whether both hold.
    A missing p99 (nothing answered) is infinitely far over."""
    p99 = result["p99_ms"] if result.get("p99_ms") is not None else math.inf
    errors = result["error_rate"]
    constraints = [p99 - slo.p99_ms, errors - slo.max_error_rate]
    feasible = p99 <= slo.p99_ms and errors <= slo.max_error_rate
    if result.get("models"):  # several models: each against its own SLO, all must hold
        models = result["models"].values()
        constraints = [max(m["constraints"][i] for m in models) for i in (0, 1)]
        feasible = all(m["meets_slo"] for m in models)
    values = [result["items_per_s"], p99] if mode == "pareto" else [result["items_per_s"]]
    return values, constraints, feasible


def constrain(trial, constraints: list, mode: str = "constrained") -> None:
    """Hand the constraints to the sampler: infeasible trials inform it instead of being thrown
    away (pareto mode keeps p99 as an objective instead)."""
    if mode != "pareto":
        trial.set_constraint("p99_over_slo_ms", min(constraints[0], CONSTRAINT_CAP))
        trial.set_constraint("error_rate_over_limit", constraints[1])


def record(trial, result: dict, slo: SloConfig, mode: str = "constrained") -> list:
    """Keep ``result`` on ``trial`` with its verdict (``constraints``, ``feasible``); returns the
    values to tell Optuna."""
    values, constraints, feasible = score(result, slo, mode)
    for k, v in result.items():
        trial.set_user_attr(k, v)
    trial.set_user_attr("constraints", constraints)
    constrain(trial, constraints, mode)
    trial.set_user_attr("feasible", feasible)
    return values


# -- the study's trials -------------------------------------------------------------------------


def is_copy(trial) -> bool:
    return "duplicate_of" in trial.user_attrs


def is_guide_step(trial) -> bool:
    """A step of the batching guide's procedure (harness.tuning.guide_procedure): measured
    beside the search, not out of its budget."""
    return "guide_step" in trial.user_attrs


def counted(trials) -> int:
    """Trials that spend the budget: started or finished, not a copy of another, and not a
    step of the guide's procedure (a competitor, counted on its own)."""
    import optuna

    waiting = optuna.trial.TrialState.WAITING
    return sum(
        1 for t in trials if t.state != waiting and not is_copy(t) and not is_guide_step(t)
    )


def tuner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def register(study, lock, tuner: str) -> int:
    """This tuner's place among the study's tuners (0 for the first): it offsets the seed, so
    that two tuners do not draw the same random start-up configs."""
    with lock.hold():
        tuners = list(study.user_attrs.get("tuners", []))
        tuners.append(tuner)
        study.set_user_attr("tuners", tuners)
        return len(tuners) - 1


def reap(study) -> None:
    """Fail RUNNING trials whose tuner is gone: Optuna's heartbeat (RDB storages), and for any
    storage, trials of a tuner on this machine whose process no longer exists."""
    import optuna

    with warnings.catch_warnings():  # "experimental since v2.9": noise on every resume
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    here = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        host, _, pid = str(t.user_attrs.get("tuner", "")).rpartition("-")
        if host == here and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)


def _heartbeat(study, trial):
    try:  # Optuna's own heartbeat thread (what study.optimize runs); no-op for journal storage
        from optuna.storages._heartbeat import get_heartbeat_thread

        return get_heartbeat_thread(trial._trial_id, study._storage)
    except ImportError:  # pragma: no cover - a future Optuna without it
        return contextlib.nullcontext()


def completed(study) -> list:
    import optuna

    return list(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def ranked_feasible(study) -> list:
    """Completed trials within the SLO, best first, each config once."""
    feasible = [t for t in completed(study) if t.user_attrs.get("feasible")]
    feasible.sort(key=lambda t: -t.user_attrs["items_per_s"])
    seen, out = set(), []
    for t in feasible:
        key = config_key(t.user_attrs["config"])
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def enqueue_baselines(study, space: SearchConfig, cores: int, keep=lambda cfg: True) -> list[str]:
    """Enqueue the baselines (``space.baselines``) that ``keep`` accepts; returns the labels of
    those it did not. Inside the space, a baseline goes in with its parameters: the sampler
    learns from it like from its own trials."""
    left_out = []
    for label, cfg in baselines(space, cores).items():
        if not keep(cfg):
            left_out.append(label)
            continue
        params = params_for(cfg, space, cores)
        attrs = {
            "baseline": label,
            "config": cfg.as_dict(),
            **({"has_params": True} if params else {}),
        }
        study.enqueue_trial(params or {}, user_attrs=attrs)
    return left_out


# -- the loop -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Loop:
    """What one tuner's loop runs with (see :func:`run_trials`)."""

    study: object
    lock: object
    objective: Callable
    after_trial: Callable
    space: SearchConfig
    cores: int
    seed: int | None
    mode: str
    tuner: str
    echo: Callable


class _NoLock:
    """The lock of a study only this process uses."""

    def hold(self, *_a, **_k):
        return contextlib.nullcontext(True)


def run_trials(
    study,
    lock=None,
    *,
    objective: Callable,
    enqueue_first: Callable[[int], None],
    after_trial: Callable,
    n_trials: int,
    timeout: float | None = None,
    space: SearchConfig,
    cores: int,
    seed: int | None = None,
    mode: str = "constrained",
    tuner: str = "",
    echo: Callable = print,
) -> int:
    """Run trials until ``study`` holds ``n_trials`` (or ``timeout`` seconds pass); returns how
    many this tuner measured.

    - ``lock``: a ``storage.StudyLock`` when several tuners may share the study (None: only this
      process uses it);
    - ``objective(trial)``: measure the trial's config (``trial.user_attrs["config"]``) and
      return the values to tell Optuna (see :func:`record`); a ``HarnessError`` fails the trial
      and the study goes on;
    - ``enqueue_first(n_trials)``: the study's first trials (baselines), called once per study,
      by the first tuner in, under the lock;
    - ``after_trial(study, frozen_trial)``: after every trial, copies included;
    - ``space``, ``cores``: what configs are suggested from and neighbours are taken in;
      ``seed`` picks the neighbour; ``mode`` is the study's (pareto has no constraints);
      ``tuner`` names this tuner on each trial it runs.
    """
    _quiet_heartbeat_warnings()
    loop = _Loop(
        study=study,
        lock=lock or _NoLock(),
        objective=objective,
        after_trial=after_trial,
        space=space,
        cores=cores,
        seed=seed,
        mode=mode,
        tuner=tuner,
        echo=echo,
    )
    t0 = time.monotonic()
    ran = 0
    while timeout is None or time.monotonic() - t0 < timeout:
        with loop.lock.hold():
            asked = _ask(loop, n_trials, enqueue_first)
        if asked is None:
            break
        frozen = _run_one(loop, *asked)
        ran += not is_copy(frozen)
        after_trial(study, frozen)
        if is_copy(frozen) and not is_guide_step(frozen):  # the guide's steps are its own
            with loop.lock.hold():
                _enqueue_neighbour(loop, frozen)
    return ran


def _quiet_heartbeat_warnings() -> None:
    """We run Optuna's heartbeat ourselves around each trial (see _heartbeat); its warnings that
    heartbeats are "meant for Study.optimize" and "experimental" are noise here."""
    import optuna

    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _ask(loop: _Loop, n_trials: int, enqueue_first):
    """Under the study lock: the next trial and an earlier one with its config (or None), or
    None when the budget is spent."""
    import optuna

    study = loop.study
    reap(study)
    trials = study.get_trials(deepcopy=False)
    if not trials:  # the first tuner in enqueues the baselines, once
        enqueue_first(n_trials)
    waiting = optuna.trial.TrialState.WAITING
    guide_left = any(is_guide_step(t) and t.state == waiting for t in trials)
    if counted(trials) >= n_trials and not guide_left:  # the guide's steps run to the end
        return None
    if sum(1 for t in trials if is_copy(t) and not is_guide_step(t)) >= n_trials:
        loop.echo(
            f"stopping: the sampler proposed {n_trials} configs that were already "
            "measured; the space is nearly exhausted (widen [search] for more)"
        )
        return None
    trial = study.ask()
    try:
        return trial, _prepare(loop, trial, trials)
    except BaseException:  # Ctrl-C here must not leave a RUNNING trial behind
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise


def _enqueue_neighbour(loop: _Loop, copy) -> None:
    """Enqueue one config next to the one ``copy`` repeated that no trial has measured or is
    about to; failing that, one next to the best feasible trial, then the next best, and so on
    (a local search outward from the best configs). Chosen with the study's seed."""
    space, cores, study = loop.space, loop.cores, loop.study
    trials = study.get_trials(deepcopy=False)
    seen = {config_key(t.user_attrs["config"]) for t in trials if "config" in t.user_attrs}
    rng = random.Random(f"{loop.seed}-{copy.number}")
    source = copy.user_attrs["duplicate_of"]
    centres = [(source, copy.user_attrs.get("config", {}))]
    centres += [(t.number, t.user_attrs["config"]) for t in ranked_feasible(study)]
    for number, centre in centres:
        fresh = [
            (n, params)
            for n in neighbours(TrialConfig.from_dict(centre), space, cores)
            if config_key(n.as_dict()) not in seen and (params := params_for(n, space, cores)) is not None
        ]
        if fresh:
            pick, params = rng.choice(fresh)
            study.enqueue_trial(
                params,
                user_attrs={"config": pick.as_dict(), "has_params": True, "neighbour_of": number},
            )
            loop.echo(
                f"trial {copy.number} repeated trial {source}: next, {pick.describe()}, "
                f"an unexplored neighbour of trial {number}"
            )
            return


def _prepare(loop: _Loop, trial, trials):
    """Give ``trial`` its config and owner; return an earlier trial with the same config."""
    import optuna

    states = optuna.trial.TrialState
    attrs = trial.user_attrs
    # an enqueued baseline brings its own config; one enqueued with parameters is suggested, so
    # the sampler sees its parameters like those of any trial it proposed
    if "config" not in attrs or attrs.get("has_params"):
        cfg = suggest(trial, loop.space, loop.cores)
        trial.set_user_attr("config", cfg.as_dict())
    trial.set_user_attr("tuner", loop.tuner)
    same = config_key(trial.user_attrs["config"])
    for t in trials:
        if t.number == trial.number or is_copy(t):
            continue
        if config_key(t.user_attrs.get("config", {})) != same:
            continue
        # a real outcome (measured, being measured, or refused with a reason); an interrupted
        # trial measured nothing, so its config is measured again
        if t.state in (states.COMPLETE, states.RUNNING) or (
            t.state == states.FAIL and t.user_attrs.get("fail_reason")
        ):
            return t
    return None


def _run_one(loop: _Loop, trial, twin):
    import optuna

    study = loop.study
    with _heartbeat(study, trial):
        try:
            other = _wait(study, twin.number) if twin is not None else None
            if other is not None and (
                other.state == optuna.trial.TrialState.COMPLETE
                or other.user_attrs.get("fail_reason")
            ):
                return _copy(loop, trial, other)
            value = loop.objective(trial)
        except HarnessError:
            return study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except BaseException:  # Ctrl-C: the trial is failed, the study stays consistent
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        return study.tell(trial, value)


def _wait(study, number: int):
    """Trial ``number`` once it is no longer RUNNING (another tuner may be measuring it)."""
    import optuna

    while True:
        other = study.get_trials(deepcopy=False)[number]
        if other.state != optuna.trial.TrialState.RUNNING:
            return other
        reap(study)
        time.sleep(DUPLICATE_POLL_S)


def _copy(loop: _Loop, trial, other):
    """Take the outcome of ``other``, a trial with the same config."""
    import optuna

    study = loop.study
    states = optuna.trial.TrialState
    number = other.number
    trial.set_user_attr("duplicate_of", number)
    label = (
        other.user_attrs.get("baseline")
        or TrialConfig.from_dict(other.user_attrs.get("config", {})).describe()
    )
    loop.echo(f"trial {trial.number}: same config as trial {number} ({label}), not measured again")
    if other.state != states.COMPLETE:
        reason = other.user_attrs.get("fail_reason", "failed")
        trial.set_user_attr("fail_reason", f"{reason} (same config as trial {number})")
        return study.tell(trial, state=states.FAIL)
    for k, v in other.user_attrs.items():
        if k not in ("tuner", "baseline", "duplicate_of", "config", "trial_dir"):
            trial.set_user_attr(k, v)
    constraints = other.user_attrs.get("constraints")
    if constraints:
        constrain(trial, constraints, loop.mode)
    return study.tell(trial, other.values if len(other.values) > 1 else other.values[0])


def running_elsewhere(study) -> int:
    import optuna

    reap(study)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
