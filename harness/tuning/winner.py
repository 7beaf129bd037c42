"""The noise-aware winner: re-measure the best configs, interleaved, and choose by the median.

One measurement of p99 on a busy machine can be lucky. The top ``top_k`` configs within the SLO
are measured ``repeats`` more times, round-robin (so a slow minute hits every config alike), and
judged on the medians (``remeasure``: the rounds, the summaries and the failure rule). A config
whose re-measured median misses the SLO (p99 or error rate), or whose re-measurements failed
too often, cannot win; when none of a group holds, the next ``top_k`` are tried, a few groups at
most, and if still none holds the study says so instead of crowning a config that does not keep
the SLO.

Batching off is re-measured in the same rounds, so the gain the study reports is a median
against a median, measured through the same minutes of this machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from harness import labels
from harness.config import SloConfig, StudyConfig
from harness.tuning import deploy, outputs, remeasure
from harness.tuning.loop import completed, ranked_feasible
from harness.tuning.space import TrialConfig

MAX_GROUPS = 3  # re-measured groups of top_k before giving up


def baseline_trial(study, label: str):
    """The completed baseline trial named ``label`` (older studies' labels read as today's)."""
    for t in completed(study):
        if labels.baseline_label(t.user_attrs.get("baseline")) == label:
            return t
    return None


def _row(t, summary: dict) -> dict:
    """A trial's summary row: which trial and config, then the figures."""
    label = labels.baseline_label(t.user_attrs.get("baseline", ""))
    return {"trial": t.number, "config": t.user_attrs["config"], "label": label, **summary}


def _single(t, slo: SloConfig) -> dict:
    """A config judged on its search measurement alone (the study asked for no re-measuring)."""
    return _row(t, remeasure.summarise([t.user_attrs], slo, repeats=1))


def pick_winner(
    study,
    *,
    name: str,
    out: Path,
    slo: SloConfig,
    settings: StudyConfig,
    measure: Callable[[TrialConfig, Path], dict],
    echo: Callable = print,
) -> dict:
    """Re-measure, choose, and write summary.json, remeasure.csv and best_batching_parameters.txt
    into ``out``. ``settings``: the study's (top_k, repeats); ``measure(config, folder)``: one
    measurement (``TrialRunner.measure``)."""
    ranked = ranked_feasible(study)
    if not ranked:
        summary = {"study": name, "winner": None, "reason": "no trial met the SLO"}
        outputs.write_json_atomic(out / "summary.json", summary)
        echo("no trial met the SLO: relax slo.p99_ms or change the search space")
        return summary
    off = baseline_trial(study, labels.BATCHING_OFF)
    rows, reference = _candidates(ranked, off, out, slo, settings, measure, echo)
    rows = remeasure.rank(rows)
    base = off.user_attrs["items_per_s"] if off is not None else None
    summary = {"study": name, "candidates": rows, "batching_off_items_per_s": base}
    if reference is not None:
        summary["batching_off"] = reference
        if reference["items_per_s_median"] is not None:
            summary["batching_off_items_per_s"] = reference["items_per_s_median"]
    outputs.write_csv_atomic(
        out / "remeasure.csv",
        [{k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in r.items()} for r in rows],
    )
    if not rows[0]["feasible"]:
        return _no_winner(summary, rows, out, slo, settings, echo)
    return _crown(summary, rows, out, slo, echo)


def _candidates(ranked, off, out: Path, slo, settings: StudyConfig, measure, echo):
    """The summary rows of the configs judged (group after group until one keeps the SLO), and
    batching off's re-measured summary (None when it was not re-measured)."""
    k, repeats = settings.top_k, settings.repeats
    if repeats <= 1 and min(k, len(ranked)) <= 1:  # nothing to re-measure: the search decides
        return [_single(t, slo) for t in ranked[:k]], None
    rows: list[dict] = []
    reference = None
    for g in range(MAX_GROUPS):
        group = ranked[g * k : (g + 1) * k]
        if not group:
            break
        measured = list(group)
        if g == 0 and off is not None and all(t.number != off.number for t in group):
            measured.append(off)  # the reference the gain is computed against
        what = "top" if g == 0 else "next"
        extra = " with batching off beside them" if len(measured) > len(group) else ""
        echo(f"re-measuring the {what} {len(group)} configs{extra} {repeats} times, interleaved")
        runs = _remeasure(measured, out, repeats, measure)
        rows += [_row(t, remeasure.summarise(runs[t.number], slo, repeats=repeats)) for t in group]
        if off is not None and off.number in runs:
            reference = _row(off, remeasure.summarise(runs[off.number], slo, repeats=repeats))
        if any(r["feasible"] for r in rows):
            break
        echo("none of them kept the SLO when re-measured")
    return rows, reference


def _remeasure(trials: list, out: Path, repeats: int, measure) -> dict[int, list[dict]]:
    """The trials' configs in interleaved rounds, cached in remeasure.json (by trial number)."""
    configs = {str(t.number): TrialConfig.from_dict(t.user_attrs["config"]) for t in trials}
    runs = remeasure.run_rounds(
        configs,
        measure,
        repeats=repeats,
        folder=lambda key, r: out / "remeasure" / f"{int(key):04d}-{r}",
        cache=out / "remeasure.json",
    )
    return {int(key): v for key, v in runs.items()}


def _no_winner(summary: dict, rows: list[dict], out: Path, slo, settings, echo) -> dict:
    summary["winner"] = None
    summary["reason"] = (
        f"none of the {len(rows)} best configs kept p99 <= {slo.p99_ms:g} ms and errors <= "
        f"{slo.max_error_rate:.1%} in at least {remeasure.needed(settings.repeats)} of "
        f"{settings.repeats} runs when re-measured: the SLO sits at the edge of what this server "
        "does at this load"
    )
    outputs.write_json_atomic(out / "summary.json", summary)
    (out / "best_batching_parameters.txt").unlink(missing_ok=True)
    echo(outputs.summary_table(rows, slo.p99_ms, False, None))
    echo(f"no winner: {summary['reason']}; relax slo.p99_ms or lower the load")
    return summary


def _crown(summary: dict, rows: list[dict], out: Path, slo, echo) -> dict:
    winner = rows[0]
    feasible = [r for r in rows if r["feasible"]]
    tie = len(feasible) > 1 and feasible[1]["items_per_s_max"] >= winner["items_per_s_min"]
    base = summary["batching_off_items_per_s"]
    gain = winner["items_per_s_median"] / base if base else None
    summary.update(winner=winner, indistinguishable_from_runner_up=tie, gain_over_batching_off=gain)
    outputs.write_json_atomic(out / "summary.json", summary)
    best_file = out / "best_batching_parameters.txt"
    cfg = TrialConfig.from_dict(winner["config"])
    if cfg.batching is not None:
        outputs.write_text_atomic(best_file, cfg.batching.to_text())
    else:
        outputs.write_text_atomic(
            best_file, "# batching off serves best: start the server without --enable_batching\n"
        )
    deploy.write(out, winner)  # deploy/: docker run, compose, Kubernetes (harness.tuning.deploy)
    echo(outputs.summary_table(rows, slo.p99_ms, tie, gain))
    echo(f"best parameters: {best_file}")
    return summary
