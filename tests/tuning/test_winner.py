"""Winner selection on a real Optuna study, with scripted re-measurements.

The re-measurements are scripted (a table of figures per config) so the rule itself is tested:
choose by the median, never crown a config whose re-measured median misses the SLO, try the
next group when a whole group misses it, and say so when nothing holds.
"""

from __future__ import annotations

import json
import types

import optuna
import pytest

from harness import labels
from harness.config import SloConfig, StudyConfig
from harness.errors import HarnessError
from harness.tuning import outputs, winner


def cfg(mbs: int) -> dict:
    return {
        "enable_batching": True,
        "max_batch_size": mbs,
        "batch_timeout_micros": 0,
        "max_enqueued_batches": 16,
        "num_batch_threads": 1,
        "intra_op_parallelism": 0,
        "inter_op_parallelism": 0,
    }


class ScriptedRunner:
    """Answers measure() from a table {max_batch_size: [(items/s, p99), ...]}, in turn; batching
    off is max_batch_size 0; None in the table is a measurement that fails."""

    def __init__(self, script: dict[int, list[tuple[float, float]]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[int] = []

    def measure(self, config, workdir):
        mbs = config.batching.max_batch_size if config.batching else 0
        self.calls.append(mbs)
        answer = self.script[mbs].pop(0)
        if answer is None:
            raise HarnessError("the server exited with code 1 before it was ready")
        ips, p99 = answer
        return {"items_per_s": ips, "p99_ms": p99, "error_rate": 0.0}


def make_tuner(tmp_path, search: dict[int, float], script, top_k=2, repeats=3, off_label=labels.BATCHING_OFF):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    off = {"items_per_s": 100.0, "p99_ms": 300.0, "feasible": False, "baseline": off_label, "config": {"enable_batching": False}}
    study.add_trial(optuna.trial.create_trial(value=100.0, user_attrs=off))
    for mbs, ips in search.items():
        attrs = {"items_per_s": ips, "p99_ms": 50.0, "feasible": True, "config": cfg(mbs)}
        study.add_trial(optuna.trial.create_trial(value=ips, user_attrs=attrs))
    exp = types.SimpleNamespace(study=StudyConfig(top_k=top_k, repeats=repeats), slo=SloConfig(p99_ms=100))
    return types.SimpleNamespace(
        exp=exp, study=study, name="w", dir=tmp_path, runner=ScriptedRunner(script), echo=lambda *a: None
    )


def pick_winner(t):
    """The winner step as the Tuner calls it."""
    return winner.pick_winner(
        t.study, name=t.name, out=t.dir, slo=t.exp.slo, settings=t.exp.study, measure=t.runner.measure, echo=t.echo
    )


def test_the_median_decides_and_the_gain_is_against_batching_off(tmp_path):
    t = make_tuner(
        tmp_path,
        {64: 900.0, 32: 850.0},
        {
            64: [(700, 60), (720, 70), (2000, 65)],
            32: [(800, 60), (810, 62), (790, 61)],
            0: [(90, 300), (80, 310), (200, 290)],
        },
    )
    s = pick_winner(t)
    assert s["winner"]["config"]["max_batch_size"] == 32  # 800 median beats 720 despite one 2000
    # batching off re-measured beside them: the gain is median against median (800 / 90), not
    # against the search's single measurement (100)
    assert s["batching_off"]["items_per_s_median"] == 90
    assert s["gain_over_batching_off"] == pytest.approx(800 / 90)
    assert t.runner.calls == [64, 32, 0, 64, 32, 0, 64, 32, 0]  # interleaved
    assert "max_batch_size { value: 32 }" in (tmp_path / "best_batching_parameters.txt").read_text()


def test_a_config_missing_the_slo_on_remeasure_cannot_win(tmp_path):
    t = make_tuner(
        tmp_path,
        {128: 1300.0, 64: 1250.0, 16: 900.0, 8: 700.0},
        {
            128: [(1300, 220), (1290, 230), (1310, 210)],
            64: [(1250, 180), (1240, 90), (1260, 190)],
            16: [(880, 80), (900, 85), (890, 90)],
            8: [(700, 70), (690, 70), (710, 70)],
            0: [(100, 300)] * 3,
        },
    )
    s = pick_winner(t)
    assert s["winner"]["config"]["max_batch_size"] == 16  # from the second group
    assert not any(c["feasible"] for c in s["candidates"] if c["config"]["max_batch_size"] in (128, 64))
    assert sorted(set(t.runner.calls)) == [0, 8, 16, 64, 128]
    assert t.runner.calls.count(0) == 3  # batching off re-measured once per round, first group
    assert json.loads((tmp_path / "summary.json").read_text())["winner"]["trial"] == s["winner"]["trial"]


def test_no_winner_when_nothing_holds_and_no_stale_parameters_file(tmp_path):
    (tmp_path / "best_batching_parameters.txt").write_text("stale")
    t = make_tuner(
        tmp_path,
        {64: 900.0},
        {64: [(900, 300), (910, 310), (905, 290)], 0: [(100, 300)] * 3},
        top_k=1,
    )
    s = pick_winner(t)
    assert s["winner"] is None and "when re-measured" in s["reason"]
    assert not (tmp_path / "best_batching_parameters.txt").exists()


def test_a_config_whose_remeasurements_all_fail_cannot_win(tmp_path):
    # the search's best (1300 items/s) fails every re-measurement: its single search figure does
    # not make it the winner; the runner-up, re-measured fine, wins
    t = make_tuner(
        tmp_path,
        {128: 1300.0, 64: 1200.0},
        {128: [None, None, None], 64: [(1150, 60), (1190, 65), (1170, 62)], 0: [(100, 300)] * 3},
    )
    s = pick_winner(t)
    assert s["winner"]["config"]["max_batch_size"] == 64
    failed = next(c for c in s["candidates"] if c["config"]["max_batch_size"] == 128)
    assert failed["feasible"] is False and failed["runs"] == 0 and failed["failed_runs"] == 3
    assert failed["items_per_s_median"] is None  # no figure was made up for it
    runs = json.loads((tmp_path / "remeasure.json").read_text())
    assert [r["failed"] for r in runs[str(failed["trial"])]] == ["the server exited with code 1 before it was ready"] * 3


def test_one_failed_run_of_three_still_wins_and_is_counted(tmp_path):
    t = make_tuner(
        tmp_path,
        {128: 1300.0, 64: 1200.0},
        {128: [(1290, 70), None, (1310, 72)], 64: [(1150, 60), (1190, 65), (1170, 62)], 0: [(100, 300)] * 3},
    )
    s = pick_winner(t)
    w = s["winner"]
    assert w["config"]["max_batch_size"] == 128
    assert (w["runs"], w["failed_runs"]) == (2, 1)
    assert w["items_per_s_median"] == 1300  # the median of the two that ran
    assert "1 of 3 runs failed" in outputs.summary_table(s["candidates"], 100, False, None)


def test_two_failed_runs_of_three_cannot_win(tmp_path):
    t = make_tuner(
        tmp_path,
        {128: 1300.0},
        {128: [None, (1310, 72), None], 0: [(100, 300)] * 3},
        top_k=1,
    )
    s = pick_winner(t)
    assert s["winner"] is None and "in at least 2 of 3 runs" in s["reason"]
    assert s["candidates"][0]["failed_runs"] == 2


def test_an_older_studys_batching_off_label_is_still_the_reference(tmp_path):
    t = make_tuner(
        tmp_path,
        {64: 900.0},
        {64: [(800, 60)] * 3, 0: [(80, 300)] * 3},
        top_k=1,
        off_label="batching off (TF Serving default)",
    )
    s = pick_winner(t)
    assert s["batching_off"]["label"] == labels.BATCHING_OFF
    assert s["gain_over_batching_off"] == pytest.approx(10.0)


def test_tied_ranges_are_reported_and_the_higher_lower_bound_wins_among_them(tmp_path):
    # 64 has the higher median (1000) but its range overlaps 32's; 32's slowest run (980) beats
    # 64's (960), so the stated rule crowns it; 16 is told apart (its range lies below both)
    t = make_tuner(
        tmp_path,
        {64: 1000.0, 32: 990.0, 16: 700.0},
        {
            64: [(1000, 90), (1010, 95), (960, 92)],
            32: [(980, 40), (990, 42), (1005, 41)],
            16: [(700, 30), (710, 30), (690, 30)],
            0: [(100, 300)] * 3,
        },
        top_k=3,
    )
    s = pick_winner(t)
    assert s["winner"]["config"]["max_batch_size"] == 32
    assert s["indistinguishable_from_runner_up"] is True
    by_mbs = {c["config"]["max_batch_size"]: c for c in s["candidates"]}
    assert s["tied_with_winner"] == [by_mbs[64]["trial"]]
    assert by_mbs[64]["tied_with_best"] and not by_mbs[16]["tied_with_best"]
    assert "highest lower bound" in s["ranking_rule"]


def test_among_tied_configs_equal_lower_bounds_go_to_the_lower_p99():
    from harness.tuning import remeasure

    def row(trial, lo, med, hi, p99):
        return {"trial": trial, "feasible": True, "items_per_s_min": lo, "items_per_s_median": med, "items_per_s_max": hi, "p99_ms_median": p99}

    ranked = remeasure.rank_by_spread([row(1, 900, 1000, 1100, 90), row(2, 900, 950, 990, 40), row(3, 500, 550, 600, 10)])
    assert [r["trial"] for r in ranked] == [2, 1, 3]
    assert [r["tied_with_best"] for r in ranked] == [True, True, False]


def _add_procedure(t, mbs: int, ips: float, *, measurements=6, wall_s=90.0):
    """A finished guide's procedure whose choice is the trial of ``cfg(mbs)``."""
    from harness.tuning import guide_procedure

    attrs = {
        "items_per_s": ips, "p99_ms": 50.0, "error_rate": 0.0, "feasible": True, "config": cfg(mbs),
        "guide_step": "timeout 2 ms", "baseline": labels.guide_step_label("timeout 2 ms"),
    }  # fmt: skip
    t.study.add_trial(optuna.trial.create_trial(value=ips, user_attrs=attrs))
    n = len(t.study.trials) - 1
    record = {
        "device": "cpu", "steps": [], "measurements": measurements, "measured_here": measurements,
        "wall_s": wall_s, "choice": {"step": "timeout 2 ms", "trial": n, "config": cfg(mbs)},
    }  # fmt: skip
    t.study.set_user_attr(guide_procedure.RECORD, record)
    return record


def pick_with_procedure(t, record):
    return winner.pick_winner(
        t.study, name=t.name, out=t.dir, slo=t.exp.slo, settings=t.exp.study,
        measure=t.runner.measure, echo=t.echo, guide_procedure=record,
    )  # fmt: skip


def test_the_gain_over_the_guides_procedure_with_its_cost_and_a_plain_verdict(tmp_path):
    t = make_tuner(
        tmp_path,
        {64: 1500.0},
        {64: [(1500, 60), (1520, 62), (1480, 61)], 8: [(1000, 50), (1010, 50), (990, 50)], 0: [(100, 300)] * 3},
        top_k=1,
    )
    record = _add_procedure(t, 8, 1000.0)
    s = pick_with_procedure(t, record)
    g = s["gains"][labels.GUIDE_PROCEDURE]
    assert g["gain"] == pytest.approx(1500 / 1000)
    assert (g["reference_items_per_s_min"], g["reference_items_per_s_max"]) == (990, 1010)
    assert g["verdict"] == "ahead" and g["reference_feasible"]
    assert (g["procedure_measurements"], g["procedure_wall_s"]) == (6, 90.0)
    assert s["guide_procedure"]["choice"]["step"] == "timeout 2 ms"
    line = next(x for x in winner.gain_lines(s) if "guide's procedure" in x)
    assert line.startswith("1.50x the throughput of the batching guide's procedure")
    assert "tuning beats it" in line and "6 measurements, 90 s" in line
    assert sorted(set(t.runner.calls)) == [0, 8, 64]  # re-measured beside the winner


def test_the_guides_procedure_as_good_is_said_plainly(tmp_path):
    t = make_tuner(
        tmp_path,
        {64: 1500.0},
        {64: [(1500, 60), (1520, 60), (1400, 60)], 8: [(1450, 70), (1480, 70), (1430, 70)], 0: [(100, 300)] * 3},
        top_k=1,
    )
    s = pick_with_procedure(t, _add_procedure(t, 8, 1450.0))
    g = s["gains"][labels.GUIDE_PROCEDURE]
    assert g["verdict"] == "tied" and g["gain"] == pytest.approx(1500 / 1450)
    line = next(x for x in winner.gain_lines(s) if "guide's procedure" in x)
    assert "is as good on this machine: the ranges overlap" in line
    assert winner.verdict({"items_per_s_min": 1, "items_per_s_max": 2}, {"items_per_s_min": 3, "items_per_s_max": 4}) == "behind"
