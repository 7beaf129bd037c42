"""The batching guide's procedure: its step sequence (CPU and GPU, without servers), and the
procedure run by the real trial loop on a real Optuna study whose measurements are scripted."""

from __future__ import annotations

import optuna
import pytest

from harness import labels
from harness.config import Range, SearchConfig, SloConfig
from harness.tuning import guide_procedure as gp
from harness.tuning import loop
from harness.tuning.space import baselines

SLO = SloConfig(p99_ms=100, max_error_rate=0.01)
SPACE = SearchConfig(
    max_batch_size=Range(choices=(1, 8, 32, 128)),
    batch_timeout_micros=Range(choices=(0, 1000, 5000)),
    num_batch_threads=Range(low=1, high=2),
    max_enqueued_batches=Range(choices=(1, 2, 16, 1_000_000)),
)


def ok(ips: float, p99: float = 50.0) -> dict:
    return {"items_per_s": ips, "p99_ms": p99, "error_rate": 0.0}


def names(steps) -> list[str]:
    return [s.name for s in steps]


def test_cpu_steps_follow_the_guide_phase_after_phase():
    steps, done = gp.plan("cpu", SPACE, 2, {}, SLO)
    assert names(steps) == ["start"] and not done
    b = steps[0].config.batching
    # threads = the server's cores, the largest batch the space allows, no timeout, open queue
    assert (b.num_batch_threads, b.max_batch_size, b.batch_timeout_micros) == (2, 128, 0)
    assert b.max_enqueued_batches == gp.HIGH_QUEUE
    # the start is the guide CPU start baseline: the two share one measurement
    assert steps[0].config == baselines(SPACE, 2)[labels.GUIDE_CPU_START]

    results = {"start": ok(1000)}
    steps, done = gp.plan("cpu", SPACE, 2, results, SLO)
    assert names(steps)[1:] == ["timeout 1 ms", "timeout 2 ms", "timeout 5 ms", "timeout 10 ms"]
    assert [s.config.batching.batch_timeout_micros for s in steps[1:]] == [1000, 2000, 5000, 10000]
    assert not done

    # 5 ms is fastest but misses the SLO; 2 ms is the best within it
    results |= {"timeout 1 ms": ok(1100), "timeout 2 ms": ok(1200), "timeout 5 ms": ok(1500, 150)}
    assert len(gp.plan("cpu", SPACE, 2, results, SLO)[0]) == 5  # one timeout still unmeasured
    results["timeout 10 ms"] = None  # failed: counted as measured, never kept
    steps, done = gp.plan("cpu", SPACE, 2, results, SLO)
    queue = steps[-1]
    assert queue.name == "max_enqueued_batches = threads" and queue.phase == 2 and not done
    assert queue.config.batching.batch_timeout_micros == 2000
    assert queue.config.batching.max_enqueued_batches == 2  # = num_batch_threads

    results[queue.name] = ok(1190)  # within NO_LOSS of 1200: the guide's online advice is kept
    steps, done = gp.plan("cpu", SPACE, 2, results, SLO)
    assert done and len(steps) == 6
    assert gp.choice("cpu", SPACE, 2, results, SLO).name == queue.name
    results[queue.name] = ok(1000)  # loses more than NO_LOSS: the 2 ms config stays
    assert gp.choice("cpu", SPACE, 2, results, SLO).name == "timeout 2 ms"
    results[queue.name] = ok(1300, 120)  # faster but over the SLO: loses
    assert gp.choice("cpu", SPACE, 2, results, SLO).name == "timeout 2 ms"


def test_cpu_timeout_zero_may_stay_best_and_nothing_within_the_slo_ends_it():
    results = {"start": ok(1000), **{f"timeout {t} ms": ok(900) for t in (1, 2, 5, 10)}}
    steps, _ = gp.plan("cpu", SPACE, 1, results, SLO)
    assert steps[-1].config.batching.batch_timeout_micros == 0
    assert steps[-1].config.batching.max_enqueued_batches == 1
    late = {name: ok(2000, 500) for name in results}
    steps, done = gp.plan("cpu", SPACE, 1, late, SLO)
    assert done and len(steps) == 5  # no queue step on nothing
    assert gp.choice("cpu", SPACE, 1, late, SLO) is None


def test_gpu_steps_tune_the_batch_size_under_a_held_timeout_then_the_timeout():
    space = SearchConfig(max_batch_size=Range(low=1, high=512), batch_timeout_micros=SPACE.batch_timeout_micros)
    steps, done = gp.plan("gpu", space, 4, {}, SLO)
    assert [s.config.batching.max_batch_size for s in steps] == [128, 256, 512]
    assert {s.config.batching.batch_timeout_micros for s in steps} == {gp.GPU_HOLD_US}
    assert {s.config.batching.num_batch_threads for s in steps} == {4} and not done
    # the size with the most throughput is kept, the SLO not judged under the held timeout
    results = {steps[0].name: ok(3000, 400), steps[1].name: ok(5000, 900), steps[2].name: None}
    steps, done = gp.plan("gpu", space, 4, results, SLO)
    timeouts = [s for s in steps if s.phase == 1]
    assert [s.config.batching.batch_timeout_micros for s in timeouts] == [0, 1000, 2000, 5000]
    assert {s.config.batching.max_batch_size for s in timeouts} == {256}
    results |= {s.name: ok(4000 + s.config.batching.batch_timeout_micros / 10, 60) for s in timeouts}
    steps, done = gp.plan("gpu", space, 4, results, SLO)
    assert steps[-1].config.batching.batch_timeout_micros == 5000
    assert steps[-1].config.batching.max_enqueued_batches == 4 and not done
    results[steps[-1].name] = ok(3000)
    # the held-timeout sizes are never the choice: the timeout there was temporary
    assert gp.choice("gpu", space, 4, results, SLO).name == "max_batch_size 256, timeout 5 ms"
    small = SearchConfig(max_batch_size=Range(choices=(8, 64)))
    assert [s.config.batching.max_batch_size for s in gp.plan("gpu", small, 1, {}, SLO)[0]] == [64]


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError):
        gp.plan("tpu", SPACE, 1, {}, SLO)


def _script(cfg: dict) -> dict:
    """Scripted figures: batching off is slow, timeouts help up to 2 ms, a short queue costs
    2% (kept, within NO_LOSS)."""
    if not cfg.get("enable_batching", True):
        return ok(100.0, 300.0)
    t = cfg["batch_timeout_micros"]
    ips = 1000.0 + min(t, 2000) / 10 - (t > 2000) * 150
    if cfg["max_enqueued_batches"] <= 2:
        ips *= 0.98
    return ok(ips, 40.0 + t / 1000)


def test_the_trial_loop_runs_the_procedure_beside_the_budget():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    measured: list[str] = []

    def objective(trial):
        cfg = trial.user_attrs["config"]
        measured.append(trial.user_attrs.get("guide_step", "search"))
        return loop.record(trial, _script(cfg), SLO)

    def enqueue_first(n):
        loop.enqueue_baselines(study, SPACE, 2)
        gp.advance(study, "cpu", SPACE, 2, SLO)

    def after_trial(study, t):
        if loop.is_guide_step(t):
            gp.advance(study, "cpu", SPACE, 2, SLO)

    loop.run_trials(
        study, objective=objective, enqueue_first=enqueue_first, after_trial=after_trial,
        n_trials=5, space=SPACE, cores=2, seed=0, echo=lambda *a: None,
    )  # fmt: skip
    trials = study.get_trials(deepcopy=False)
    steps = [t for t in trials if loop.is_guide_step(t)]
    # every step in order, each labelled as the guide's; the start shares the baseline's run
    assert [t.user_attrs["guide_step"] for t in steps] == [
        "start", "timeout 1 ms", "timeout 2 ms", "timeout 5 ms", "timeout 10 ms",
        "max_enqueued_batches = threads",
    ]  # fmt: skip
    assert all(t.user_attrs["baseline"] == labels.guide_step_label(t.user_attrs["guide_step"]) for t in steps)
    assert "duplicate_of" in steps[0].user_attrs and "start" not in measured
    # the budget of 5 is the search's own (baselines count in it, as before); the steps do not
    assert loop.counted(trials) == 5
    rec = study.user_attrs[gp.RECORD]
    assert rec["measurements"] == 6 and rec["measured_here"] == 5
    assert rec["choice"]["step"] == "max_enqueued_batches = threads"  # 980 within 5% of 1200*0.98
    assert rec["choice"]["config"]["batch_timeout_micros"] == 2000
    assert rec["choice"]["config"]["max_enqueued_batches"] == 2
    assert gp.reference_trial(study).number == rec["choice"]["trial"]
    assert rec["wall_s"] >= 0
    # advancing again changes nothing: every step has an outcome
    assert gp.advance(study, "cpu", SPACE, 2, SLO) == []


def test_the_setting_takes_cpu_or_gpu_and_refuses_anything_else(tmp_path):
    from harness import config
    from harness.errors import ConfigError

    exp = tmp_path / "e.toml"
    exp.write_text('[model]\ndemo = "mlp"\n[study]\nguide_procedure = "cpu"\n')
    assert config.load(exp).study.guide_procedure == "cpu"
    assert config.load(exp, ['study.guide_procedure="gpu"']).study.guide_procedure == "gpu"
    with pytest.raises(ConfigError, match="study.guide_procedure = 'tpu' is not one of cpu, gpu"):
        config.load(exp, ['study.guide_procedure="tpu"'])
