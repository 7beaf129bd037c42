"""Several models in one server, on the search side: per-model queue parameters proposed by
Optuna with one thread pool, each model judged against its own SLO (a trial holds only if all
do, in the search and in the re-measurement), trials.csv's per-model columns, and the winner's
files (the global file, each model's batching_params.pbtxt, deploy/)."""

from __future__ import annotations

import tomllib

import optuna
import yaml

from harness import config, tfs_flags, tfs_formats
from harness.atomic import write_text
from harness.batching import BatchingParameters
from harness.metrics import Measurement
from harness.tuning import deploy, loop, outputs, remeasure
from harness.tuning.space import SHARED_POOL, TrialConfig, neighbours, params_for, suggest
from harness.tuning.trial import model_results

optuna.logging.set_verbosity(optuna.logging.WARNING)

EXP = {
    "models": [{"demo": "ranker"}, {"demo": "mlp", "slo_p99_ms": 20}],
    "load": {"traffic": "ranker:70,mlp:30"},
    "slo": {"p99_ms": 100, "max_error_rate": 0.01},
}


def per_model_exp(**search):
    return config.from_dict({**EXP, "search": {"per_model_batching": True, **search}})


def test_optuna_proposes_each_models_queue_and_one_thread_pool():
    exp = per_model_exp(num_batch_threads={"low": 1, "high": 4})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    cfg = suggest(trial, exp.search, cores=4)
    names = set(trial.params)
    assert {"num_batch_threads", "ranker.max_batch_size", "mlp.max_batch_size",
            "ranker.batch_timeout_micros", "mlp.max_enqueued_batches"} <= names  # fmt: skip
    assert "max_batch_size" not in names  # no shared queue parameter
    assert cfg.batching == BatchingParameters(
        num_batch_threads=trial.params["num_batch_threads"], thread_pool_name=SHARED_POOL
    )
    assert [n for n, _ in cfg.per_model] == ["ranker", "mlp"]
    mlp = cfg.model_batching("mlp")
    assert mlp.max_batch_size == trial.params["mlp.max_batch_size"] and mlp.num_batch_threads is None
    # its identity survives the trip through the study's storage
    again = TrialConfig.from_dict(cfg.as_dict())
    assert again == cfg and "ranker[mbs=" in cfg.describe()
    assert params_for(cfg, exp.search, 4) is None and neighbours(cfg, exp.search, 4) == []


def test_shared_space_stays_one_file_for_every_model():
    exp = config.from_dict(EXP)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    cfg = suggest(study.ask(), exp.search, cores=2)
    assert cfg.per_model == () and cfg.batching.max_batch_size is not None


def m(p99, errors=0, ok=100):
    return Measurement(
        seconds=1.0, requests=ok + errors, ok=ok, throughput_rps=ok, items_per_s=ok,
        p50_ms=p99 / 2, p90_ms=p99, p95_ms=p99, p99_ms=p99, p999_ms=p99, mean_ms=p99 / 2,
        errors={"UNAVAILABLE": errors} if errors else {}, rejection_rate=errors / (ok + errors),
        late_sends=0,
    )  # fmt: skip


def test_each_model_against_its_own_slo_and_the_trial_holds_only_if_all_do():
    exp = config.from_dict(EXP)
    ok = model_results(exp, {"ranker": m(90), "mlp": m(15)})
    assert ok["ranker"]["slo_p99_ms"] == 100 and ok["mlp"]["slo_p99_ms"] == 20
    assert ok["ranker"]["share"] == 0.5 and all(v["meets_slo"] for v in ok.values())
    result = {"items_per_s": 200, "p99_ms": 90, "error_rate": 0.0, "models": ok}
    assert loop.score(result, exp.slo)[2]
    # the mlp over its own 20 ms while the ranker and the overall p99 are within 100 ms
    bad = model_results(exp, {"ranker": m(90), "mlp": m(30)})
    assert not bad["mlp"]["meets_slo"] and bad["ranker"]["meets_slo"]
    values, constraints, feasible = loop.score({**result, "models": bad}, exp.slo)
    assert not feasible and constraints[0] == 10
    rejected = model_results(exp, {"ranker": m(10, errors=5), "mlp": m(10)})
    assert not loop.score({**result, "models": rejected}, exp.slo)[2]


def test_the_remeasurement_keeps_the_per_model_rule():
    exp = config.from_dict(EXP)
    runs = [
        {"items_per_s": 200, "p99_ms": 50, "error_rate": 0.0,
         "models": model_results(exp, {"ranker": m(50), "mlp": m(p)})}
        for p in (15, 25, 30)
    ]  # fmt: skip
    out = remeasure.summarise(runs, exp.slo, repeats=3)
    assert out["models"]["mlp"]["p99_ms_median"] == 25 and not out["models"]["mlp"]["meets_slo"]
    assert not out["feasible"]
    assert remeasure.summarise(runs[:1] * 3, exp.slo, repeats=3)["feasible"]


def test_trials_csv_has_each_models_columns():
    exp = per_model_exp()
    study = optuna.create_study()
    trial = study.ask()
    cfg = suggest(trial, exp.search, cores=2)
    result = {"items_per_s": 1.0, "p99_ms": 5.0, "error_rate": 0.0,
              "models": model_results(exp, {"ranker": m(5), "mlp": m(30)})}  # fmt: skip
    trial.set_user_attr("config", cfg.as_dict())
    loop.record(trial, result, exp.slo)
    study.tell(trial, 1.0)
    (row,) = outputs.trial_rows(study)
    assert row["mlp.meets_slo"] is False and row["ranker.meets_slo"] is True
    assert row["ranker.max_batch_size"] == cfg.model_batching("ranker").max_batch_size
    assert row["mlp.p99_ms"] == 30 and row["feasible"] is False


def test_a_per_model_winner_writes_each_models_file_and_deploy(tmp_path, mlp_base):
    exp = config.from_dict({
        "models": [{"path": str(mlp_base), "name": "a"}, {"path": str(mlp_base), "name": "b"}],
        "server": {"backend": "docker", "image": "tensorflow/serving:2.14.1"},
        "search": {"per_model_batching": True},
    })  # fmt: skip
    out = tmp_path / "study"
    write_text(out / "experiment.toml", config.to_toml(exp))
    assert config.load(out / "experiment.toml").models == exp.models
    own = {"a": BatchingParameters(max_batch_size=8, batch_timeout_micros=0, max_enqueued_batches=4),
           "b": BatchingParameters(max_batch_size=64, batch_timeout_micros=2000, max_enqueued_batches=1)}  # fmt: skip
    cfg = TrialConfig(
        batching=BatchingParameters(num_batch_threads=2, thread_pool_name=SHARED_POOL),
        per_model=tuple(own.items()),
    )
    folder = deploy.write(out, {"trial": 0, "config": cfg.as_dict()})
    for name, params in own.items():
        assert BatchingParameters.read(out / deploy.PER_MODEL_DIR / name / "batching_params.pbtxt") == params
        assert BatchingParameters.read(folder / name / "batching_params.pbtxt") == params
    assert BatchingParameters.read(folder / "batching_parameters.txt") == cfg.batching
    models = tfs_formats.read(folder / "models.config", tfs_formats.ModelServerConfig)
    assert [(c.name, c.base_path) for c in models.model_config_list.config] == [("a", "/models/a"), ("b", "/models/b")]
    compose = yaml.safe_load((folder / "docker-compose.yml").read_text())
    (service,) = compose["services"].values()
    assert "--model_config_file=/config/models.config" in service["command"]
    assert "--enable_per_model_batching_parameters" in service["command"]
    assert tfs_flags.unknown(service["command"]) == []
    assert {v.split(":")[1] for v in service["volumes"]} >= {"/models/a", "/models/b"}
    assert "copy <model>/batching_params.pbtxt" in (folder / "docker-run.sh").read_text()
    k8s = list(yaml.safe_load_all((folder / "kubernetes.yaml").read_text()))
    assert set(k8s[0]["data"]) == {"batching_parameters.txt", "models.config", "monitoring.config"}
    tomllib.loads(config.to_toml(exp))
