"""The benchmark's figures and README table (benchmarks/guide_benchmark_table.py), and the
driver's pure parts (its commands, the final round's answers), on files written here the way
the methods write them. No server."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from benchmarks import guide_benchmark as driver
from benchmarks import guide_benchmark_table as table

GUIDE = table.GUIDE_PROCEDURE
OFF = table.BATCHING_OFF


def summary_row(trial, config, median, lo, hi, *, feasible=True, p99=50.0):
    return {
        "trial": trial,
        "config": config,
        "items_per_s_median": median,
        "items_per_s_min": lo,
        "items_per_s_max": hi,
        "p99_ms_median": p99,
        "runs": 3,
        "failed_runs": 0,
        "feasible": feasible,
    }


WINNER_CFG = {"enable_batching": True, "max_batch_size": 64, "batch_timeout_micros": 1000,
              "num_batch_threads": 2, "max_enqueued_batches": 1000000}  # fmt: skip
GUIDE_CFG = {"enable_batching": True, "max_batch_size": 128, "batch_timeout_micros": 0,
             "num_batch_threads": 1, "max_enqueued_batches": 1}  # fmt: skip
OFF_CFG = {"enable_batching": False}


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def trial(n, ips, *, feasible=True, baseline="", dup="", state="COMPLETE", dur=20.0):
    return {"number": n, "state": state, "baseline": baseline, "items_per_s": ips,
            "feasible": str(feasible), "duplicate_of": dup, "duration_s": dur}  # fmt: skip


def write_tune(
    folder: Path, *, winner=1300.0, guide=(1000.0, 950.0, 1050.0), guide_ok=True
) -> None:
    d = folder / "tune-30"
    w = summary_row(12, WINNER_CFG, winner, winner - 40, winner + 30)
    g = summary_row(5, GUIDE_CFG, *guide, feasible=guide_ok)
    off = summary_row(0, OFF_CFG, 240.0, 230.0, 250.0, feasible=False, p99=480.0)
    verdict = "ahead" if w["items_per_s_min"] > g["items_per_s_max"] else "tied"
    gains = {
        OFF: {"gain": winner / 240.0, "verdict": "ahead", "reference_feasible": False, "reference_trial": 0},
        GUIDE: {"gain": winner / guide[0], "verdict": verdict, "reference_feasible": guide_ok, "reference_trial": 5},
    }  # fmt: skip
    summary = {
        "server": "the reference server (native path)",
        "winner": w,
        "references": {OFF: off, GUIDE: g},
        "gains": gains,
        "guide_procedure": {"choice": {"step": "max_enqueued_batches = threads"}, "measurements": 6, "wall_s": 130.0},
    }  # fmt: skip
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(summary))
    rows = [
        trial(0, 240, feasible=False, baseline=OFF, dur=19.5),
        trial(1, 1000, baseline="batching guide CPU start"),
        trial(2, 1000, baseline=f"{GUIDE}: start", dup="1"),  # a copy: costs nothing
        trial(3, 1240, baseline=f"{GUIDE}: timeout 1 ms"),  # a guide step: not a search trial
        trial(4, 300, feasible=False),
        trial(5, 1100),
        trial(6, 1200),
        trial(7, 0, state="FAIL"),
        trial(8, 1250),
    ]
    write_csv(d / "trials.csv", rows)
    for name in ("0012-0", "0012-1", "0012-2", "0005-0"):
        (d / "remeasure" / name).mkdir(parents=True)


def write_grid(folder: Path, best_single=1300.0) -> None:
    d = folder / "grid"
    rows = [
        {"config": json.dumps({"max_batch_size": 64}), "items_per_s": best_single, "p99_ms": 50, "error_rate": 0, "feasible": "True", "failed": ""},
        {"config": json.dumps({"max_batch_size": 128}), "items_per_s": 1200, "p99_ms": 60, "error_rate": 0, "feasible": "True", "failed": ""},
        {"config": json.dumps({"max_batch_size": 8}), "items_per_s": "", "p99_ms": "", "error_rate": "", "feasible": "False", "failed": "refused"},
    ]  # fmt: skip
    write_csv(d / "grid.csv", rows)
    configs = [
        summary_row(None, {"max_batch_size": 128}, 1250.0, 1200.0, 1280.0),
        summary_row(None, {"max_batch_size": 64}, 1280.0, 1210.0, 1300.0),
    ]
    (d / "remeasure.json").write_text(json.dumps({"repeats": 3, "configs": configs}))


def test_figures_take_each_method_from_its_files(tmp_path):
    write_tune(tmp_path)
    write_grid(tmp_path)
    runs = {"tune": {"wall_s": 1100.0}, "grid": {"wall_s": 500.0}}
    fig = table.figures(tmp_path, runs)
    assert fig["best"]["tune"]["median"] == 1300.0
    assert fig["best"]["guide"]["config"] == GUIDE_CFG
    assert fig["best"]["off"]["feasible"] is False
    assert fig["best"]["grid"]["median"] == 1280.0  # the best re-measured, not the best single
    assert fig["best"]["guided"] is None
    costs = fig["costs"]
    assert costs["guide"]["measurements"] == 6 and costs["guide"]["wall_s"] == 130.0
    assert costs["off"] == {"measurements": 1, "wall_s": 19.5, "note": "one trial"}
    # 8 trials took a measurement (the copy did not), 4 re-measurements
    assert costs["tune"]["measurements"] == 12 and costs["tune"]["wall_s"] == 1100.0
    assert costs["grid"]["measurements"] == 3 + 6
    assert fig["grid"]["configs"] == 3 and fig["grid"]["failed"] == 1


def test_trials_to_95_count_search_trials_only(tmp_path):
    write_tune(tmp_path)
    write_grid(tmp_path, best_single=1300.0)  # 95%: 1,235 items/s
    fig = table.figures(tmp_path, {})
    # the guide step at 1,240 is not a search trial; counted: 0, 1, 4, 5, 6, 7 (failed), 8
    assert fig["trials_to_95"]["tune"] == 7
    write_grid(tmp_path, best_single=2000.0)
    assert table.figures(tmp_path, {})["trials_to_95"]["tune"] is None


def test_targets_read_the_ranges(tmp_path):
    write_tune(tmp_path / "a", winner=1300.0, guide=(1000.0, 950.0, 1050.0))
    t = table.figures(tmp_path / "a", {})["targets"]
    assert t["never_worse_than_guide"] and t["beats_guide"] and not t["guide_as_good"]
    write_tune(tmp_path / "b", winner=1300.0, guide=(1250.0, 1200.0, 1290.0))
    t = table.figures(tmp_path / "b", {})["targets"]
    assert t["never_worse_than_guide"] and not t["beats_guide"] and t["guide_as_good"]
    # the guide's choice missed the SLO when re-measured: tuning meets an SLO the guide misses
    write_tune(tmp_path / "c", winner=1300.0, guide=(1250.0, 1200.0, 1290.0), guide_ok=False)
    t = table.figures(tmp_path / "c", {})["targets"]
    assert t["beats_guide"] and not t["guide_as_good"]


def test_guided_share_prefers_the_interleaved_final_round(tmp_path):
    write_tune(tmp_path)
    write_grid(tmp_path)
    g = tmp_path / "guided-10"
    g.mkdir()
    (g / "summary.json").write_text(
        json.dumps({"winner": summary_row(3, WINNER_CFG, 1100.0, 1000.0, 1150.0)})
    )
    write_csv(g / "trials.csv", [trial(0, 1100)])
    fig = table.figures(tmp_path, {})
    assert round(fig["guided_share_of_grid"], 3) == round(1100 / 1280, 3)
    assert fig["guided_share_source"] == "separate runs"
    assert fig["targets"]["guided_reaches_95"] is False
    final = tmp_path / "final"
    final.mkdir()
    winners = [
        {"study": "guided", **summary_row(None, WINNER_CFG, 1250.0, 1200.0, 1300.0)},
        {"study": "grid+tune", **summary_row(None, WINNER_CFG, 1290.0, 1250.0, 1310.0)},
    ]
    (final / "head_to_head.json").write_text(json.dumps({"rounds": 3, "winners": winners}))
    fig = table.figures(tmp_path, {})
    assert fig["final"]["tune"]["median"] == 1290.0  # a shared config counts for each method
    assert fig["guided_share_source"] == "final (interleaved)"
    assert fig["targets"]["guided_reaches_95"] is True


def test_readme_section_is_generated_and_replaced(tmp_path):
    write_tune(tmp_path)
    write_grid(tmp_path)
    fig = table.figures(tmp_path, {"tune": {"wall_s": 1100.0}})
    section = table.readme_section([("w1", "a workload", fig)])
    assert (
        "| w1 | the guide's procedure | 128 / 0 ms / 1 thr / q 1 | 1,000 (950-1,050) |" in section
    )
    assert (
        "| w1 | `tune --trials 30` | 64 / 1 ms / 2 thr / q 1e6 | 1,300 (1,260-1,330) |" in section
    )
    assert "240 (230-250), misses the SLO" in section
    assert "1.30x (ahead, ranges apart)" in section
    assert "18.3 min" in section  # 1,100 s of wall time
    text = "# results\n\nbefore\n"
    once = table.replace_section(text, section)
    assert once.startswith(text.rstrip("\n")) and once.count(table.BEGIN) == 1
    again = table.replace_section(once + "after\n", section.replace("w1", "w2"))
    assert again.count(table.BEGIN) == 1 and "| w2 |" in again and "| w1 |" not in again
    assert again.endswith("after\n")


def test_describe_names_splitting_and_padding():
    cfg = {"max_batch_size": 128, "batch_timeout_micros": 2000, "num_batch_threads": 1,
           "max_enqueued_batches": 16, "enable_large_batch_splitting": True,
           "max_execution_batch_size": 32, "allowed_batch_sizes": [8, 16, 32]}  # fmt: skip
    assert table.describe(cfg) == "128 / 2 ms / 1 thr / q 16 / split to 32 / padded to 8,16,32"
    assert table.describe(OFF_CFG) == "batching off"


def test_final_round_measures_each_distinct_answer_once(tmp_path):
    write_tune(tmp_path)
    write_grid(tmp_path)
    found = driver.answers(tmp_path)
    assert found["grid"] == {"enable_batching": True, "max_batch_size": 64}
    found["guided"] = dict(GUIDE_CFG)
    names = driver.distinct(found)
    assert set(names) == {"guide+guided", "tune", "grid", "off"}


def test_commands_are_what_a_user_runs(tmp_path):
    w = driver.WORKLOADS["ranker-closed"]
    cmds = driver.commands("ranker-closed", w, tmp_path / "ranker-closed")
    tune = driver.shown(cmds["tune"])
    assert tune.startswith("harness tune --experiment experiments/benchmark/ranker-closed.toml")
    assert "--trials 30 --guide-procedure cpu" in tune
    assert "--guide simulate --trials 10" in driver.shown(cmds["guided"])
    grid = driver.shown(cmds["grid"])
    assert grid.startswith("python experiments/grid_search.py") and "--remeasure 3" in grid
    smoke = driver.commands("ranker-closed", w, tmp_path, smoke=True)
    assert "--trials 2" in driver.shown(smoke["tune"])
    assert driver.smoke_grid(w.grid)[0].startswith("max_batch_size=32,64;batch_timeout_micros=0;")
    for name, work in driver.WORKLOADS.items():  # every workload's file loads and checks
        from harness import config

        config.load(work.experiment(name))


def test_a_procedure_that_kept_nothing_is_an_slo_the_guide_misses(tmp_path):
    write_tune(tmp_path)
    path = tmp_path / "tune-30" / "summary.json"
    summary = json.loads(path.read_text())
    summary["guide_procedure"]["choice"] = None  # no step kept the SLO
    del summary["references"][GUIDE], summary["gains"][GUIDE]
    start = summary_row(1, GUIDE_CFG, 900.0, 850.0, 950.0, feasible=False, p99=140.0)
    summary["references"][table.GUIDE_CPU_START] = start
    path.write_text(json.dumps(summary))
    fig = table.figures(tmp_path, {})
    assert fig["guide_found_nothing"] and fig["best"]["guide"] is None
    assert fig["targets"]["beats_guide"] and not fig["targets"]["guide_as_good"]
    section = table.readme_section([("w", "x", fig)])
    assert "| w | the guide's procedure | - | none of its steps kept the SLO |" in section
    assert "900 (850-950), misses the SLO" in section  # its first step, re-measured
    assert set(driver.answers(tmp_path)) == {"tune", "off", "start"}
