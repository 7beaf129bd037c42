"""The batching guide's procedure as a competitor (``harness tune --guide-procedure cpu|gpu``).

TF Serving's batching guide (tensorflow_serving/batching/README.md, "Recommended Approach to
Choosing Scheduling Parameters") tells a user how to pick the four knobs by hand. This module
follows it step by step, the way a user who read it would, so the study can say what tuning adds
over it and what the procedure cost (measurements, wall time).

**CPU** (three phases; each step is one measurement):

1. ``start``: ``num_batch_threads`` = the server's cores, ``max_batch_size`` "very high" (here:
   the largest the search space allows, so the step is the guide's CPU start baseline and shares
   its measurement), ``batch_timeout_micros`` 0, ``max_enqueued_batches`` very high (the guide
   says to keep the queue unbounded while experimenting);
2. timeouts of 1, 2, 5 and 10 ms (the guide's 1-10 ms range in a few steps) on the start's other
   values; the best within the SLO of phases 1 and 2 is kept (0 may stay best, as the guide
   says);
3. ``max_enqueued_batches`` = ``num_batch_threads`` (the guide's advice for online serving) on
   the kept config; kept unless it loses: misses the SLO, or measures more than ``NO_LOSS``
   below the config it replaces (one measurement's noise on a shared machine is of that order).

**GPU** (three phases):

1. ``max_batch_size`` in the hundreds and thousands (128-4096, those the search space allows;
   its largest when none), threads = cores, the timeout held high (``GPU_HOLD_US``) so that
   batches fill; the size with the most throughput is kept (the timeout is temporary, so the
   SLO is not judged yet);
2. timeouts of 0, 1, 2 and 5 ms ("a few milliseconds", zero included) on that size, to rein in
   the tail; the best within the SLO is kept;
3. ``max_enqueued_batches`` = ``num_batch_threads``, as on the CPU.

The step sequence is pure (:func:`plan`, :func:`choice`: measurements in, steps out) and is
unit-tested without servers. :func:`advance` runs it on a study: the steps are enqueued as
baseline trials (labelled ``labels.guide_step_label``), measured by the same trial loop and
``TrialRunner`` as every trial, a phase once the previous one is measured. They do not spend the
search's trial budget (``loop.counted``); inside the search space they go in with their
parameters, as the baselines do. When the last phase is measured, the procedure's record (its
steps, its choice, the measurements and wall time it took) is kept in the study's user attrs,
where the winner step finds the reference to re-measure.
"""

from __future__ import annotations

import dataclasses

from harness import labels
from harness.batching import BatchingParameters
from harness.config import SearchConfig, SloConfig
from harness.tuning.loop import completed, score
from harness.tuning.space import TrialConfig, largest_batch_size, params_for

DEVICES = ("cpu", "gpu")
HIGH_QUEUE = 1_000_000  # "very high" while experimenting: the guide CPU start baseline's value
CPU_TIMEOUTS_US = (1_000, 2_000, 5_000, 10_000)
GPU_BATCH_SIZES = (128, 256, 512, 1024, 2048, 4096)
# The GPU procedure's "really high" timeout while max_batch_size is tuned: 100 ms fills a batch
# at any rate worth a GPU, and a trial whose batches never fill still ends in bounded time.
GPU_HOLD_US = 100_000
GPU_TIMEOUTS_US = (0, 1_000, 2_000, 5_000)
NO_LOSS = 0.05  # the queue step is kept unless it measures more than this below the kept config
RECORD = "guide_procedure"  # the study's user attr holding the procedure's record


@dataclasses.dataclass(frozen=True, kw_only=True)
class Step:
    """One measurement the procedure takes: its name (unique in the procedure), its phase
    (0, 1, 2) and the config it measures."""

    name: str
    phase: int
    config: TrialConfig


def _config(mbs: int, timeout: int, threads: int, queue: int) -> TrialConfig:
    return TrialConfig(
        batching=BatchingParameters(
            max_batch_size=mbs,
            batch_timeout_micros=timeout,
            num_batch_threads=threads,
            max_enqueued_batches=queue,
        )
    )


def _ms(us: int) -> str:
    return f"{us / 1000:g} ms"


def _with(step: Step, name: str, phase: int, **changes) -> Step:
    b = dataclasses.replace(step.config.batching, **changes)
    return Step(name=name, phase=phase, config=dataclasses.replace(step.config, batching=b))


def _measured(steps: list[Step], results: dict) -> bool:
    return all(s.name in results for s in steps)


def _feasible(result: dict | None, slo: SloConfig) -> bool:
    return result is not None and score(result, slo)[2]


def _best_within(steps: list[Step], results: dict, slo: SloConfig) -> Step | None:
    """The step with the most throughput within the SLO (the first of equals), or None."""
    ok = [s for s in steps if _feasible(results.get(s.name), slo)]
    return max(ok, key=lambda s: results[s.name]["items_per_s"], default=None)


def _queue_step(kept: Step, phase: int) -> Step:
    threads = kept.config.batching.num_batch_threads
    return _with(kept, "max_enqueued_batches = threads", phase, max_enqueued_batches=threads)


def _cpu_phases(space: SearchConfig, cores: int, results: dict, slo: SloConfig):
    start = Step(name="start", phase=0, config=_config(largest_batch_size(space), 0, cores, HIGH_QUEUE))
    yield [start]
    timeouts = [_with(start, f"timeout {_ms(t)}", 1, batch_timeout_micros=t) for t in CPU_TIMEOUTS_US]
    yield timeouts
    kept = _best_within([start, *timeouts], results, slo)
    if kept is not None:
        yield [_queue_step(kept, 2)]


def _gpu_sizes(space: SearchConfig) -> list[int]:
    largest = largest_batch_size(space)
    return [s for s in GPU_BATCH_SIZES if s <= largest] or [largest]


def _gpu_phases(space: SearchConfig, cores: int, results: dict, slo: SloConfig):
    sizes = [
        Step(name=f"max_batch_size {s} (timeout {_ms(GPU_HOLD_US)})", phase=0, config=_config(s, GPU_HOLD_US, cores, HIGH_QUEUE))
        for s in _gpu_sizes(space)
    ]
    yield sizes
    ran = [s for s in sizes if results.get(s.name) is not None]
    if not ran:
        return
    size = max(ran, key=lambda s: results[s.name]["items_per_s"])
    mbs = size.config.batching.max_batch_size
    timeouts = [
        _with(size, f"max_batch_size {mbs}, timeout {_ms(t)}", 1, batch_timeout_micros=t)
        for t in GPU_TIMEOUTS_US
    ]
    yield timeouts
    kept = _best_within(timeouts, results, slo)
    if kept is not None:
        yield [_queue_step(kept, 2)]


def _phases(device: str, space: SearchConfig, cores: int, results: dict, slo: SloConfig):
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}")
    return (_cpu_phases if device == "cpu" else _gpu_phases)(space, cores, results, slo)


def plan(
    device: str, space: SearchConfig, cores: int, results: dict, slo: SloConfig
) -> tuple[list[Step], bool]:
    """The steps known so far and whether the procedure is over. ``results``: step name ->
    its measurement (``items_per_s``, ``p99_ms``, ``error_rate``), None for a step that failed;
    a step not in it is not measured yet. Each phase follows once the one before is measured."""
    steps: list[Step] = []
    for phase in _phases(device, space, cores, results, slo):
        steps += phase
        if not _measured(phase, results):
            return steps, False
    return steps, True


def choice(device: str, space: SearchConfig, cores: int, results: dict, slo: SloConfig) -> Step | None:
    """The config the procedure ends on: the best within the SLO of the phases before the queue
    step (for the GPU, of the timeout phase), replaced by the queue step unless that loses.
    None when nothing the procedure measured kept the SLO (or it is not over)."""
    steps, done = plan(device, space, cores, results, slo)
    if not done:
        return None
    candidates = [s for s in steps if s.phase < 2 and (device == "cpu" or s.phase == 1)]
    kept = _best_within(candidates, results, slo)
    queue = [s for s in steps if s.phase == 2]
    if kept is None or not queue:
        return kept
    q = queue[0]
    r = results.get(q.name)
    if _feasible(r, slo) and r["items_per_s"] >= (1 - NO_LOSS) * results[kept.name]["items_per_s"]:
        return q
    return kept


# -- on a study ---------------------------------------------------------------------------------


def _is_step(t) -> bool:
    return "guide_step" in t.user_attrs


def _origin(study, t):
    """The trial that measured ``t``'s figures: ``t``, or the trial a copy took them from."""
    n = t.user_attrs.get("duplicate_of")
    return study.get_trials(deepcopy=False)[n] if n is not None else t


def step_trials(study) -> dict[str, object]:
    """The trial with the outcome of each step (complete, or failed with a reason), by step."""
    import optuna

    out = {}
    for t in study.get_trials(deepcopy=False):
        if not _is_step(t):
            continue
        done = t.state == optuna.trial.TrialState.COMPLETE
        if done or (t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("fail_reason")):
            out.setdefault(t.user_attrs["guide_step"], t)
    return out


def results_of(study) -> dict[str, dict | None]:
    """Each step's measurement (None: it failed) from the study's trials."""
    import optuna

    out = {}
    for name, t in step_trials(study).items():
        a = t.user_attrs
        ok = t.state == optuna.trial.TrialState.COMPLETE
        out[name] = (
            {"items_per_s": a["items_per_s"], "p99_ms": a.get("p99_ms"), "error_rate": a["error_rate"]}
            if ok
            else None
        )
    return out


def _pending(study) -> set[str]:
    """Steps waiting or being measured (an interrupted step, failed without a reason, is not)."""
    import optuna

    live = (optuna.trial.TrialState.WAITING, optuna.trial.TrialState.RUNNING)
    return {t.user_attrs["guide_step"] for t in study.get_trials(deepcopy=False) if _is_step(t) and t.state in live}


def advance(study, device: str, space: SearchConfig, cores: int, slo: SloConfig) -> list[Step]:
    """Enqueue the steps the procedure can take next that no trial has or is about to; when the
    procedure is over, keep its record on the study. Call under the study lock. Returns the
    steps enqueued."""
    results = results_of(study)
    steps, done = plan(device, space, cores, results, slo)
    pending = _pending(study)
    fresh = [s for s in steps if s.name not in results and s.name not in pending]
    for s in fresh:
        params = params_for(s.config, space, cores)
        attrs = {
            "baseline": labels.guide_step_label(s.name),
            "guide_step": s.name,
            "guide_phase": s.phase,
            "config": s.config.as_dict(),
            **({"has_params": True} if params else {}),
        }
        study.enqueue_trial(params or {}, user_attrs=attrs)
    if done and RECORD not in study.user_attrs:
        study.set_user_attr(RECORD, record(study, device, space, cores, slo))
    return fresh


def record(study, device: str, space: SearchConfig, cores: int, slo: SloConfig) -> dict:
    """What the procedure did: each step (its trial, figures, verdict), the config it chose (its
    trial, the measuring trial when the step was a copy), the measurements a user following it
    takes (one per step), how many this study took for it (copies of an earlier trial cost none)
    and the wall time of those measurements."""
    results = results_of(study)
    trials = step_trials(study)
    steps, _ = plan(device, space, cores, results, slo)
    rows, wall = [], 0.0
    for s in steps:
        t = trials.get(s.name)
        if t is None:
            continue
        origin = _origin(study, t)
        wall += origin.duration.total_seconds() if origin.duration else 0.0
        r = results[s.name]
        rows.append(
            {
                "step": s.name,
                "phase": s.phase,
                "trial": t.number,
                "measured_by": origin.number,
                "config": s.config.as_dict(),
                "items_per_s": r and r["items_per_s"],
                "p99_ms": r and r["p99_ms"],
                "feasible": _feasible(r, slo),
                "failed": r is None,
            }
        )
    chosen = choice(device, space, cores, results, slo)
    pick = next((r for r in rows if chosen and r["step"] == chosen.name), None)
    return {
        "device": device,
        "steps": rows,
        "choice": pick and {"step": pick["step"], "trial": pick["measured_by"], "config": pick["config"]},
        "measurements": len(rows),
        "measured_here": sum(1 for r in rows if r["trial"] == r["measured_by"]),
        "wall_s": round(wall, 1),
    }


def reference_trial(study):
    """The trial of the procedure's choice, for the winner step to re-measure; None when the
    study ran no procedure, it is not over, or it found nothing within the SLO."""
    rec = study.user_attrs.get(RECORD) or {}
    pick = rec.get("choice")
    if not pick:
        return None
    for t in completed(study):
        if t.number == pick["trial"]:
            return t
    return None
