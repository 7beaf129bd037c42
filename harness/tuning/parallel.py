"""The trial loop, safe for several tuners sharing one study (Optuna's ask-and-tell).

Each tuner runs the same loop against the shared storage. Under the study lock it counts the
trials that exist (the budget is the study's, not each tuner's), enqueues the baselines once,
asks for a trial and picks its config. A config already measured in the study, or being measured
by another tuner right now, is not measured again: the new trial takes that trial's figures and
says so (``duplicate_of``); re-measuring is the winner step's job. A copy costs no measurement
and does not count against the trial budget; instead, an unexplored neighbour of the repeated
config is enqueued (see ``space.neighbours``), so a sampler that has settled on one config spends
the next trial on the configs around it. Measuring happens outside the lock, with Optuna's
heartbeat running so that a killed tuner's trial is failed for everyone.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import time
import warnings

from harness.errors import HarnessError
from harness.procs import pid_alive
from harness.tuning.space import TrialConfig, neighbours, params_for, suggest

DUPLICATE_POLL_S = 2.0


def is_copy(trial) -> bool:
    return "duplicate_of" in trial.user_attrs


def counted(trials) -> int:
    """Trials that spend the budget: started or finished, and not a copy of another."""
    import optuna

    waiting = optuna.trial.TrialState.WAITING
    return sum(1 for t in trials if t.state != waiting and not is_copy(t))


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


def _key(cfg: dict) -> str:
    return json.dumps(cfg, sort_keys=True)


def _heartbeat(study, trial):
    try:  # Optuna's own heartbeat thread (what study.optimize runs); no-op for journal storage
        from optuna.storages._heartbeat import get_heartbeat_thread

        return get_heartbeat_thread(trial._trial_id, study._storage)
    except ImportError:  # pragma: no cover - a future Optuna without it
        return contextlib.nullcontext()


def run_trials(tuner, n_trials: int, timeout: float | None = None) -> int:
    """Run trials until the study holds ``n_trials``; returns how many this tuner ran."""
    import optuna

    # We run Optuna's heartbeat ourselves around each trial (see _heartbeat); its warnings that
    # heartbeats are "meant for Study.optimize" and "experimental" are noise here.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

    study = tuner.study
    states = optuna.trial.TrialState
    t0 = time.monotonic()
    ran = 0
    while timeout is None or time.monotonic() - t0 < timeout:
        with tuner.lock.hold():
            reap(study)
            trials = study.get_trials(deepcopy=False)
            if not trials:  # the first tuner in enqueues the baselines, once
                tuner._enqueue_first(n_trials)
            if counted(trials) >= n_trials:
                break
            if sum(map(is_copy, trials)) >= n_trials:
                tuner.echo(
                    f"stopping: the sampler proposed {n_trials} configs that were already "
                    "measured; the space is nearly exhausted (widen [search] for more)"
                )
                break
            trial = study.ask()
            try:
                twin = _prepare(tuner, trial, trials)
            except BaseException:  # Ctrl-C here must not leave a RUNNING trial behind
                study.tell(trial, state=states.FAIL)
                raise
        frozen = _run_one(tuner, trial, twin)
        ran += not is_copy(frozen)
        tuner._after_trial(study, frozen)
        if is_copy(frozen):
            with tuner.lock.hold():
                enqueue_neighbour(tuner, frozen)
    return ran


def enqueue_neighbour(tuner, copy) -> None:
    """Enqueue one config next to the one ``copy`` repeated that no trial has measured or is
    about to; failing that, one next to the best feasible trial, then the next best, and so on
    (a local search outward from the best configs). Chosen with the study's seed."""
    from harness.tuning.winner import ranked_feasible

    space, cores = tuner.exp.search, tuner._cores()
    trials = tuner.study.get_trials(deepcopy=False)
    seen = {_key(t.user_attrs["config"]) for t in trials if "config" in t.user_attrs}
    rng = random.Random(f"{tuner.exp.study.seed}-{copy.number}")
    source = copy.user_attrs["duplicate_of"]
    centres = [(source, copy.user_attrs.get("config", {}))]
    centres += [(t.number, t.user_attrs["config"]) for t in ranked_feasible(tuner.study)]
    for number, centre in centres:
        fresh = [
            (n, params)
            for n in neighbours(TrialConfig.from_dict(centre), space, cores)
            if _key(n.as_dict()) not in seen and (params := params_for(n, space, cores)) is not None
        ]
        if fresh:
            pick, params = rng.choice(fresh)
            tuner.study.enqueue_trial(
                params,
                user_attrs={"config": pick.as_dict(), "has_params": True, "neighbour_of": number},
            )
            tuner.echo(
                f"trial {copy.number} repeated trial {source}: next, {pick.describe()}, "
                f"an unexplored neighbour of trial {number}"
            )
            return


def _prepare(tuner, trial, trials):
    """Give ``trial`` its config and owner; return an earlier trial with the same config."""
    import optuna

    states = optuna.trial.TrialState
    attrs = trial.user_attrs
    # an enqueued baseline brings its own config; one enqueued with parameters is suggested, so
    # the sampler sees its parameters like those of any trial it proposed
    if "config" not in attrs or attrs.get("has_params"):
        cfg = suggest(trial, tuner.exp.search, tuner._cores())
        trial.set_user_attr("config", cfg.as_dict())
    trial.set_user_attr("tuner", tuner.tuner)
    same = _key(trial.user_attrs["config"])
    for t in trials:
        if t.number == trial.number or is_copy(t):
            continue
        if _key(t.user_attrs.get("config", {})) != same:
            continue
        # a real outcome (measured, being measured, or refused with a reason); an interrupted
        # trial measured nothing, so its config is measured again
        if t.state in (states.COMPLETE, states.RUNNING) or (
            t.state == states.FAIL and t.user_attrs.get("fail_reason")
        ):
            return t
    return None


def _run_one(tuner, trial, twin):
    import optuna

    study = tuner.study
    with _heartbeat(study, trial):
        try:
            other = _wait(tuner, twin.number) if twin is not None else None
            if other is not None and (
                other.state == optuna.trial.TrialState.COMPLETE
                or other.user_attrs.get("fail_reason")
            ):
                return _copy(tuner, trial, other)
            value = tuner._objective(trial)
        except HarnessError:
            return study.tell(trial, state=optuna.trial.TrialState.FAIL)
        except BaseException:  # Ctrl-C: the trial is failed, the study stays consistent
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        return study.tell(trial, value)


def _wait(tuner, number: int):
    """Trial ``number`` once it is no longer RUNNING (another tuner may be measuring it)."""
    import optuna

    while True:
        other = tuner.study.get_trials(deepcopy=False)[number]
        if other.state != optuna.trial.TrialState.RUNNING:
            return other
        reap(tuner.study)
        time.sleep(DUPLICATE_POLL_S)


def _copy(tuner, trial, other):
    """Take the outcome of ``other``, a trial with the same config."""
    import optuna

    study = tuner.study
    states = optuna.trial.TrialState
    number = other.number
    trial.set_user_attr("duplicate_of", number)
    label = (
        other.user_attrs.get("baseline")
        or TrialConfig.from_dict(other.user_attrs.get("config", {})).describe()
    )
    tuner.echo(f"trial {trial.number}: same config as trial {number} ({label}), not measured again")
    if other.state != states.COMPLETE:
        reason = other.user_attrs.get("fail_reason", "failed")
        trial.set_user_attr("fail_reason", f"{reason} (same config as trial {number})")
        return study.tell(trial, state=states.FAIL)
    for k, v in other.user_attrs.items():
        if k not in ("tuner", "baseline", "duplicate_of", "config", "trial_dir"):
            trial.set_user_attr(k, v)
    constraints = other.user_attrs.get("constraints")
    if constraints and tuner.exp.study.mode != "pareto":
        trial.set_constraint("p99_over_slo_ms", min(constraints[0], 1e9))
        trial.set_constraint("error_rate_over_limit", constraints[1])
    return study.tell(trial, other.values if len(other.values) > 1 else other.values[0])


def running_elsewhere(study) -> int:
    import optuna

    reap(study)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
