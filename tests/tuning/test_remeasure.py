"""The SLO rule (``loop.score``) and the one re-measurement module (rounds, cache, summary, the
failure rule), on figures measured for real: the published gRPC study's re-measurements
(results/published/ranker-grpc/remeasure.json, what ``TrialRunner.measure`` returned). The grid
and head-to-head experiments are checked to summarise through the same module. No server."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from experiments.grid_search import remeasure as grid_remeasure
from experiments.head_to_head import head_to_head
from harness.batching import BatchingParameters
from harness.config import SloConfig
from harness.errors import HarnessError
from harness.tuning import loop, remeasure, winner
from harness.tuning.space import TrialConfig

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "results" / "published" / "ranker-grpc"
SLO = SloConfig(p99_ms=150, max_error_rate=0.01)  # the published study's (experiments/default.toml)
FAILED = {"failed": "the server exited with code 1 before it was ready"}


@pytest.fixture(scope="module")
def measured() -> dict[str, list[dict]]:
    """Trial number -> its three real re-measurements (trial 0 is batching off)."""
    return json.loads((PUBLISHED / "remeasure.json").read_text())


@pytest.fixture(scope="module")
def published() -> dict:
    return json.loads((PUBLISHED / "summary.json").read_text())


def test_score_is_the_slo_rule():
    values, constraints, ok = loop.score(
        {"items_per_s": 900.0, "p99_ms": 150.0, "error_rate": 0.01}, SLO
    )
    assert values == [900.0] and constraints == [0.0, 0.0] and ok  # on the edge is within
    _, constraints, ok = loop.score({"items_per_s": 900.0, "p99_ms": 150.5, "error_rate": 0.0}, SLO)
    assert constraints[0] == pytest.approx(0.5) and not ok
    _, constraints, ok = loop.score({"items_per_s": 900.0, "p99_ms": 20.0, "error_rate": 0.02}, SLO)
    assert constraints[1] == pytest.approx(0.01) and not ok
    values, constraints, ok = loop.score(
        {"items_per_s": 0.0, "p99_ms": None, "error_rate": 1.0}, SLO, "pareto"
    )
    assert values == [0.0, float("inf")] and constraints[0] == float("inf") and not ok


def test_record_keeps_the_figures_and_hands_the_sampler_finite_constraints(measured):
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    run = {**measured["33"][0], "p99_ms": None}  # nothing answered in time
    values = loop.record(trial, run, SLO)
    frozen = study.tell(trial, values)
    assert frozen.user_attrs["items_per_s"] == run["items_per_s"]
    assert frozen.user_attrs["feasible"] is False
    assert frozen.system_attrs["constraints:p99_over_slo_ms"] == loop.CONSTRAINT_CAP


def test_the_summary_of_real_runs_is_the_published_one(measured, published):
    for c in published["candidates"] + [published["batching_off"]]:
        got = remeasure.summarise(measured[str(c["trial"])], SLO, repeats=3)
        for key, value in got.items():
            if key in ("items_per_core_s_median", "server_peak_memory_mb_max"):
                continue  # the published study predates the resource figures
            assert c[key] == pytest.approx(value), (c["trial"], key)


def test_failed_runs_are_counted_never_figures(measured):
    runs = measured["33"]
    one = remeasure.summarise([runs[0], FAILED, runs[2]], SLO, repeats=3)
    assert (one["runs"], one["failed_runs"], one["feasible"]) == (2, 1, True)
    assert one["items_per_s_min"] == min(runs[0]["items_per_s"], runs[2]["items_per_s"])
    two = remeasure.summarise([FAILED, runs[1], FAILED], SLO, repeats=3)
    assert (two["runs"], two["failed_runs"], two["feasible"]) == (
        1,
        2,
        False,
    )  # one run is no median
    assert two["items_per_s_median"] == runs[1]["items_per_s"]
    none = remeasure.summarise([FAILED] * 3, SLO, repeats=3)
    assert none["feasible"] is False and none["failed_runs"] == 3
    assert none["items_per_s_median"] is None and none["p99_ms_median"] is None
    # a study that asks for one re-measurement needs that one
    assert remeasure.summarise([runs[0]], SLO, repeats=1)["feasible"]
    assert not remeasure.summarise([FAILED], SLO, repeats=1)["feasible"]
    ranked = remeasure.rank([none, two, one])
    assert ranked[0] is one and ranked[-1] is none


class Replay:
    """``measure(config, folder)`` answering with real runs, per max_batch_size, in turn; a run
    of ``FAILED`` raises as a refused server does."""

    def __init__(self, runs: dict[int, list[dict]]) -> None:
        self.runs = {k: list(v) for k, v in runs.items()}
        self.calls: list[tuple[int, str]] = []

    def measure(self, config: TrialConfig, folder: Path) -> dict:
        mbs = config.batching.max_batch_size if config.batching else 0
        self.calls.append((mbs, folder.name))
        run = self.runs[mbs].pop(0)
        if "failed" in run:
            raise HarnessError(run["failed"] + "\nlast lines of the server's log")
        return run


def cfg(mbs: int) -> TrialConfig:
    return TrialConfig(
        batching=BatchingParameters(
            max_batch_size=mbs, batch_timeout_micros=0, num_batch_threads=1, max_enqueued_batches=1
        )
    )


def test_rounds_interleave_and_resume_from_the_cache(tmp_path, measured):
    cache = tmp_path / "runs.json"
    cache.write_text(json.dumps({"a": [measured["31"][0]], "other": [FAILED]}))
    replay = Replay({64: measured["31"][1:], 128: [FAILED, *measured["33"][:2]]})
    configs = {"a": cfg(64), "b": cfg(128)}
    seen = []
    runs = remeasure.run_rounds(
        configs,
        replay.measure,
        repeats=3,
        folder=lambda key, r: tmp_path / f"{key}-{r}",
        cache=cache,
        progress=lambda key, r, run, s: seen.append((key, r, "failed" in run)),
    )
    # round 0 of "a" came from the cache; then round by round, every config once per round
    assert replay.calls == [(128, "b-0"), (64, "a-1"), (128, "b-1"), (64, "a-2"), (128, "b-2")]
    assert seen[0] == ("b", 0, True)
    assert runs["a"] == measured["31"] and runs["b"][0] == {"failed": FAILED["failed"]}
    kept = json.loads(cache.read_text())
    assert kept["a"] == runs["a"] and kept["b"] == runs["b"] and kept["other"] == [FAILED]
    again = remeasure.run_rounds(
        configs, replay.measure, repeats=3, folder=lambda k, r: tmp_path, cache=cache
    )
    assert again == runs and len(replay.calls) == 5  # all done: nothing measured again


def test_the_grid_and_head_to_head_summarise_as_the_winner_step_does(tmp_path, measured, capsys):
    exp = type("Exp", (), {"slo": SLO})()
    rows = [{"config": json.dumps(_grid_params(m), sort_keys=True)} for m in (64, 128)]
    grid = Replay({64: [measured["31"][0], FAILED, measured["31"][2]], 128: [FAILED] * 3})
    grid_remeasure(grid, exp, rows, 3, tmp_path / "grid")
    written = json.loads((tmp_path / "grid" / "remeasure.json").read_text())["configs"]
    got = {json.dumps(c["config"], sort_keys=True): c for c in written}
    for r, runs in zip(rows, ([measured["31"][0], FAILED, measured["31"][2]], [FAILED] * 3)):
        expected = remeasure.summarise(runs, SLO, repeats=3)
        assert {k: got[r["config"]][k] for k in expected} == expected
    assert got[rows[1]["config"]]["failed_runs"] == 3  # a failed run is no longer 0 items/s
    assert "every run failed" in capsys.readouterr().out

    h2h = Replay({64: [measured["31"][0], FAILED, measured["31"][2]], 128: list(measured["33"])})
    out = head_to_head(
        {"guided": cfg(64), "unguided": cfg(128)}, h2h.measure, SLO, 3, tmp_path / "h2h"
    )
    assert [(c[0], c[1]) for c in h2h.calls][:2] == [(64, "guided-0"), (128, "unguided-0")]
    doc = json.loads((tmp_path / "h2h" / "head_to_head.json").read_text())
    assert doc["winners"] == out
    guided = remeasure.summarise([measured["31"][0], FAILED, measured["31"][2]], SLO, repeats=3)
    assert {k: out[0][k] for k in guided} == guided and out[0]["failed_runs"] == 1


def _grid_params(mbs: int) -> dict:
    return {
        "batch_timeout_micros": 0,
        "max_batch_size": mbs,
        "max_enqueued_batches": 1,
        "num_batch_threads": 1,
    }


def test_the_cost_of_a_config_is_its_items_per_core_second_and_its_peak_memory():
    runs = [
        {"items_per_s": 1000.0, "p99_ms": 5.0, "error_rate": 0.0, "server_cores": 0.5, "server_peak_memory_mb": 300.0},
        {"items_per_s": 1200.0, "p99_ms": 5.0, "error_rate": 0.0, "server_cores": 0.8, "server_peak_memory_mb": 320.0},
        {"items_per_s": 900.0, "p99_ms": 5.0, "error_rate": 0.0, "server_cores": 1.0, "server_peak_memory_mb": 310.0},
    ]
    s = remeasure.summarise(runs, SLO, repeats=3)
    assert s["items_per_core_s_median"] == pytest.approx(1500.0)  # of 2000, 1500, 900
    assert s["server_peak_memory_mb_max"] == 320.0
    # a backend that measured neither (an external server) states no cost
    bare = [{k: v for k, v in r.items() if not k.startswith("server_")} for r in runs]
    none = remeasure.summarise(bare, SLO, repeats=3)
    assert none["items_per_core_s_median"] is None and none["server_peak_memory_mb_max"] is None
    assert winner.resource_text(s) == "served 1,500 items per core-second and peaked at 320 MiB"
    assert winner.resource_text(none) == ""
