"""Guided picks, capacity plans and profiles: pure, no server."""

import dataclasses
import json
import math

import pytest

from harness.batching import BatchingParameters
from harness.cli import main
from harness.config import Experiment, ModelConfig
from harness.errors import ConfigError
from harness.labels import EXIT_USAGE
from harness.sim import profile as profiles
from harness.sim.guide import Predictor
from harness.sim.plan import plan
from harness.tuning.guided import MARGIN, GuidedSearch, pareto
from harness.tuning.space import TrialConfig, neighbours


def ranker_like(max_size=128) -> profiles.Profile:
    ex = {1: 2900, 2: 3200, 4: 3800, 8: 5000, 16: 7000, 32: 10500, 64: 18000, 128: 35000}
    return profiles.Profile(
        model="ranker-like",
        backend="synthetic",
        cores=1,
        exec_us={
            k: {"median": v, "p10": 0.95 * v, "p90": 1.08 * v}
            for k, v in ex.items()
            if k <= max_size
        },
        overhead={
            "grpc": profiles.Overhead(
                cpu_in_us=110, cpu_out_us=80, reject_us=60, rtt_us=150, client_us=300
            )
        },
        environment={"cpu_model": "test"},
    )


def test_profile_round_trip_and_malformed_files(tmp_path):
    p = profiles.save(ranker_like(), tmp_path / "p.json")
    back = profiles.load(p)
    assert back.exec_us == ranker_like().exec_us and back.overhead == ranker_like().overhead
    data = json.loads(p.read_text())
    data["exec_us"]["4"]["median"] = 0
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="not positive"):
        profiles.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="no rest overhead"):
        back.overhead_for("rest")


def test_neighbours_stay_in_the_space():
    exp = Experiment(model=ModelConfig(demo="ranker")).check()
    cfg = TrialConfig(
        batching=BatchingParameters(
            max_batch_size=64,
            batch_timeout_micros=1000,
            num_batch_threads=1,
            max_enqueued_batches=16,
        )
    )
    got = {json.dumps(n.as_dict(), sort_keys=True) for n in neighbours(cfg, exp.search, cores=2)}
    mbs = sorted(json.loads(g)["max_batch_size"] for g in got)
    assert 32 in mbs and 128 in mbs and all(m in exp.search.max_batch_size.choices for m in mbs)
    assert any(json.loads(g)["batch_timeout_micros"] == 0 for g in got)
    assert any(json.loads(g)["num_batch_threads"] == 2 for g in got)
    assert len(got) >= 6


def test_guided_picks_are_distinct_predicted_and_best_first():
    exp = Experiment(model=ModelConfig(demo="ranker")).check()
    exp = dataclasses.replace(exp, slo=dataclasses.replace(exp.slo, p99_ms=150))
    g = GuidedSearch(exp, Predictor(exp, ranker_like(), cores=1), cores=1, echo=lambda *a: None)
    picks = g.candidates(10, seed=0, sim_trials=120)
    keys = [json.dumps(c.as_dict(), sort_keys=True) for c, _, _ in picks]
    assert len(picks) == 10 and len(set(keys)) == 10
    first = picks[0][1]
    assert first["predicted_feasible"]
    best = [p for _, p, why in picks if why.startswith("predicted best")]
    assert first["predicted_items_per_s"] == max(p["predicted_items_per_s"] for p in best)
    # a neighbour of the simulated search's best may beat it, by a hair at most
    top = max(p["predicted_items_per_s"] for _, p, _ in picks if p["predicted_feasible"])
    assert first["predicted_items_per_s"] >= 0.99 * top
    # batching pays on this model: the best pick batches, far above batching off
    off = g.predict(TrialConfig(batching=None))
    assert first["predicted_items_per_s"] > 3 * off["predicted_items_per_s"]
    front = pareto([(c, p) for c, p, _ in picks])
    p99s = [p["predicted_p99_no_pause_ms"] for _, p in front]
    assert p99s == sorted(p99s, reverse=True)


def test_the_simulator_predicts_and_the_tuner_judges_the_prediction():
    exp = Experiment(model=ModelConfig(demo="ranker")).check()
    predictor = Predictor(exp, ranker_like(), cores=1)
    params = BatchingParameters(
        max_batch_size=32, batch_timeout_micros=1000, num_batch_threads=1, max_enqueued_batches=16
    )
    figures = predictor.predict(params, None)
    assert figures["predicted_items_per_s"] > 0 and "predicted_feasible" not in figures
    assert predictor.predict(params, None) is figures  # cached
    for p99_ms in (5.0, 1000.0):  # an SLO the prediction misses, one it keeps
        slo = dataclasses.replace(exp.slo, p99_ms=p99_ms)
        g = GuidedSearch(dataclasses.replace(exp, slo=slo), predictor, cores=1)
        judged = g.predict(TrialConfig(batching=params))
        keeps = figures["predicted_p99_no_pause_ms"] <= p99_ms * (1 - MARGIN)
        assert judged["predicted_feasible"] == keeps == (p99_ms > 5.0)


def test_the_tuner_hooks_enqueue_the_picks_with_their_predictions():
    import optuna

    exp = Experiment(model=ModelConfig(demo="ranker")).check()
    g = GuidedSearch(exp, Predictor(exp, ranker_like(), cores=1), cores=1, echo=lambda *a: None)
    study = optuna.create_study(direction="maximize")
    g.enqueue(study, 4, seed=0)
    waiting = study.get_trials()
    assert len(waiting) == 4 and all(t.user_attrs["guided"] for t in waiting)
    assert waiting[0].user_attrs["guided"] == "predicted best #1"
    first = TrialConfig.from_dict(waiting[0].user_attrs["config"])
    assert (
        waiting[0].user_attrs["predicted_items_per_s"] == g.predict(first)["predicted_items_per_s"]
    )
    trial = study.ask()  # the first pick; then one the sampler chooses gets its prediction too
    study.tell(trial, 1.0)
    for _ in range(3):
        study.tell(study.ask(), 1.0)
    free = study.ask()
    cfg = TrialConfig(batching=None)
    g.attach_prediction(free, cfg)
    assert free.user_attrs == g.predict(cfg)


def test_the_picks_enqueue_into_a_study_on_disk(tmp_path):
    """A study's storage (SQLite, as harness tune keeps it) writes every attribute as JSON: a
    prediction must hold plain Python values. A predicted p99 over the SLO made a numpy bool,
    which failed the guided study; the SLO here is one no config keeps."""
    import optuna

    from harness.config import SloConfig

    exp = Experiment(model=ModelConfig(demo="ranker"), slo=SloConfig(p99_ms=1.0)).check()
    g = GuidedSearch(exp, Predictor(exp, ranker_like(), cores=1), cores=1, echo=lambda *a: None)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", direction="maximize")
    g.enqueue(study, 2, seed=0)
    waiting = study.get_trials()
    assert len(waiting) == 2
    assert [t.user_attrs["predicted_feasible"] for t in waiting] == [False, False]


def test_plan_scales_replicas_with_the_rate_and_keeps_the_slo():
    prof = ranker_like(max_size=16)
    small = plan(prof, rate=5_000, p99_ms=50, protocol="grpc", headroom=0.2, echo=None)
    big = plan(prof, rate=1_000_000, p99_ms=50, protocol="grpc", headroom=0.2, echo=None)
    cap = small["best"].rate
    assert cap > 0 and small["best"].params is not None
    assert small["replicas"] == math.ceil(5_000 / (cap * 0.8))
    assert big["replicas"] == math.ceil(1_000_000 / (big["best"].rate * 0.8))
    assert big["replicas"] > 100 * small["replicas"] / 2
    assert big["predicted_at_plan"].p99_ms <= 50
    assert any("Poisson" in a for a in big["assumptions"])


def test_plan_command_errors_are_one_line(capsys, tmp_path):
    assert main(["plan", "--rate", "100", "--p99", "10"]) == EXIT_USAGE
    assert "give --profile FILE or --experiment FILE" in capsys.readouterr().err
    p = profiles.save(ranker_like(max_size=8), tmp_path / "p.json")
    assert main(["plan", "--rate", "100", "--p99", "1", "--profile", str(p)]) == EXIT_USAGE
    assert "no config serves" in capsys.readouterr().err


def test_profile_command_refuses_an_unknown_protocol(capsys):
    assert main(["profile", "--protocols", "grpc,soap"]) == EXIT_USAGE
    assert "'soap' is not grpc or rest" in capsys.readouterr().err
