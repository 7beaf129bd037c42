"""The noise-aware winner: re-measure the best configs, interleaved, and choose by the median.

One measurement of p99 on a busy machine can be lucky. The top ``top_k`` configs within the SLO
are measured ``repeats`` more times, round-robin (so a slow minute hits every config alike), and
judged on the medians (``remeasure``: the rounds, the summaries and the failure rule). A config
whose re-measured median misses the SLO (p99 or error rate), or whose re-measurements failed
too often, cannot win; when none of a group holds, the next ``top_k`` are tried, a few groups at
most, and if still none holds the study says so instead of crowning a config that does not keep
the SLO.

The references are re-measured in the same rounds: batching off, the batching guide's CPU start
and the user's own baseline (``harness tune --baseline FILE``), whichever the study measured. So
each gain the study states is a median against a median, measured through the same minutes of
this machine. summary.json is what a pipeline reads: ``met_slo``, the winner and its figures,
the gains, the server measured and the exit code with its meaning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from harness import labels
from harness.config import SloConfig, StudyConfig
from harness.tuning import deploy, guide_procedure, outputs, remeasure
from harness.tuning.loop import completed, ranked_feasible
from harness.tuning.progress import Clock
from harness.tuning.space import TrialConfig

MAX_GROUPS = 3  # re-measured groups of top_k before giving up


def _key(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def baseline_trial(study, label: str, config: dict | None = None):
    """The completed baseline trial named ``label`` (older studies' labels read as today's);
    with ``config``, the one measured with that config."""
    for t in completed(study):
        if labels.baseline_label(t.user_attrs.get("baseline")) != label:
            continue
        if config is None or _key(t.user_attrs.get("config", {})) == _key(config):
            return t
    return None


def reference_trials(study, user_baseline: dict | None = None) -> dict:
    """The completed references by label, in the headline's order: batching off, the guide's
    CPU start, the guide's procedure's choice (``--guide-procedure``), and the user's baseline
    (the trial of ``user_baseline``, the config given this run, when there is one; else any the
    study measured)."""
    out = {}
    for label in labels.REFERENCES:
        if label == labels.GUIDE_PROCEDURE:
            t = guide_procedure.reference_trial(study)
        else:
            mine = user_baseline if label == labels.USER_BASELINE else None
            t = baseline_trial(study, label, mine)
        if t is not None:
            out[label] = t
    return out


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
    server: str = "",
    user_baseline: dict | None = None,
    clock: Clock | None = None,
    guide_procedure: dict | None = None,
) -> dict:
    """Re-measure, choose, and write summary.json, remeasure.csv and best_batching_parameters.txt
    into ``out``. ``settings``: the study's (top_k, repeats); ``measure(config, folder)``: one
    measurement (``TrialRunner.measure``); ``server``: the name of the server measured, for the
    headline; ``user_baseline``: the config of ``--baseline`` (``TrialConfig.as_dict``);
    ``clock``: the run's clock, for the re-measurements' progress lines;
    ``guide_procedure``: the record of the guide's procedure, when the study ran it
    (``guide_procedure.record``), kept in summary.json."""
    summary = {
        "study": name,
        "server": server or None,
        "slo": {"p99_ms": slo.p99_ms, "max_error_rate": slo.max_error_rate},
    }
    if guide_procedure:
        summary["guide_procedure"] = guide_procedure
    ranked = ranked_feasible(study)
    if not ranked:
        return _nothing_feasible(study, summary, out, echo)
    refs = reference_trials(study, user_baseline)
    rows, ref_rows = _candidates(ranked, refs, out, slo, settings, measure, echo, clock)
    rows = remeasure.rank_by_spread(rows)
    off = refs.get(labels.BATCHING_OFF)
    summary.update(
        candidates=rows,
        references=ref_rows,
        batching_off_items_per_s=off.user_attrs["items_per_s"] if off is not None else None,
    )
    reference = ref_rows.get(labels.BATCHING_OFF)
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


def _outcome(summary: dict, code: int) -> None:
    summary.update(
        met_slo=code == labels.EXIT_OK, exit_code=code, exit_meaning=labels.EXIT_MEANINGS[code]
    )


def _nothing_feasible(study, summary: dict, out: Path, echo) -> dict:
    """No trial met the SLO in the search; or none could be measured at all (exit code 2)."""
    if completed(study):
        summary.update(winner=None, reason="no trial met the SLO")
        _outcome(summary, labels.EXIT_SLO_MISSED)
        echo("no trial met the SLO: relax slo.p99_ms or change the search space")
    else:
        failed = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("fail_reason")]
        first = failed[0].user_attrs["fail_reason"] if failed else "no trial ran"
        summary.update(winner=None, reason=f"every trial failed; the first: {first}")
        _outcome(summary, labels.EXIT_USAGE)
        echo(
            f"every trial failed: nothing was measured (the first: {first}); see trials/*/failure.txt"
        )
    outputs.write_json_atomic(out / "summary.json", summary)
    (out / "best_batching_parameters.txt").unlink(missing_ok=True)
    return summary


def _candidates(ranked, refs: dict, out: Path, slo, settings: StudyConfig, measure, echo, clock):
    """The summary rows of the configs judged (group after group until one keeps the SLO), and
    the references' rows by label (re-measured in the first group's rounds; their search
    figures when the study re-measures nothing)."""
    k, repeats = settings.top_k, settings.repeats
    if repeats <= 1 and min(k, len(ranked)) <= 1:  # nothing to re-measure: the search decides
        return [_single(t, slo) for t in ranked[:k]], {
            label: _single(t, slo) for label, t in refs.items()
        }
    rows: list[dict] = []
    ref_rows: dict[str, dict] = {}
    for g in range(MAX_GROUPS):
        group = ranked[g * k : (g + 1) * k]
        if not group:
            break
        measured = list(group)
        if g == 0:  # the references, each config once (a baseline may repeat another's config)
            seen = {_key(t.user_attrs["config"]) for t in measured}
            for t in refs.values():
                if _key(t.user_attrs["config"]) not in seen:
                    seen.add(_key(t.user_attrs["config"]))
                    measured.append(t)
        what = "top" if g == 0 else "next"
        extra = len(measured) - len(group)
        beside = f" with {extra} reference{'s' if extra > 1 else ''} beside them" if extra else ""
        echo(f"re-measuring the {what} {len(group)} configs{beside} {repeats} times, interleaved")
        runs = _remeasure(measured, out, repeats, measure, echo, clock)
        rows += [_row(t, remeasure.summarise(runs[t.number], slo, repeats=repeats)) for t in group]
        by_config = {_key(t.user_attrs["config"]): t for t in measured}
        for label, t in refs.items():
            m = by_config.get(_key(t.user_attrs["config"]))
            if label not in ref_rows and m is not None and m.number in runs:
                row = _row(m, remeasure.summarise(runs[m.number], slo, repeats=repeats))
                ref_rows[label] = {**row, "label": label}
        if any(r["feasible"] for r in rows):
            break
        echo("none of them kept the SLO when re-measured")
    return rows, ref_rows


def _remeasure(
    trials: list, out: Path, repeats: int, measure, echo, clock
) -> dict[int, list[dict]]:
    """The trials' configs in interleaved rounds, cached in remeasure.json (by trial number),
    with a progress line per run (elapsed and ETA) when ``clock`` is given."""
    configs = {str(t.number): TrialConfig.from_dict(t.user_attrs["config"]) for t in trials}
    names = {str(t.number): labels.baseline_label(t.user_attrs.get("baseline")) for t in trials}
    cached = remeasure.read_cache(out / "remeasure.json")
    total = sum(max(0, repeats - len(cached.get(key, []))) for key in configs)
    done = [0]

    def progress(key: str, r: int, run: dict, seconds: float) -> None:
        if clock is None:
            return
        clock.lap()
        done[0] += 1
        what = names[key] or configs[key].describe()
        echo(
            f"  [re-measure {done[0]}/{total}] trial {key} ({what}), round {r + 1}: "
            f"{remeasure.describe_run(run)} | {clock.status(total - done[0])}"
        )

    runs = remeasure.run_rounds(
        configs,
        measure,
        repeats=repeats,
        folder=lambda key, r: out / "remeasure" / f"{int(key):04d}-{r}",
        cache=out / "remeasure.json",
        progress=progress,
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
    _outcome(summary, labels.EXIT_SLO_MISSED)
    outputs.write_json_atomic(out / "summary.json", summary)
    (out / "best_batching_parameters.txt").unlink(missing_ok=True)
    echo(outputs.summary_table(_with_references(rows, summary), slo.p99_ms, False, None))
    echo(f"no winner: {summary['reason']}; relax slo.p99_ms or lower the load")
    return summary


def verdict(winner: dict, reference: dict) -> str:
    """How the winner stands against a reference, on the re-measured ranges: ``ahead`` (its
    lowest run beats the reference's highest), ``behind`` (the other way round) or ``tied``
    (the ranges overlap: the reference is as good, on this machine)."""
    if remeasure.overlap(winner, reference):
        return "tied"
    return "ahead" if winner["items_per_s_min"] > reference["items_per_s_max"] else "behind"


def gains(winner: dict, references: dict[str, dict], procedure: dict | None = None) -> dict[str, dict]:
    """The winner's gain over each reference with a re-measured figure: its median over the
    reference's median, both ranges beside them, the ``verdict`` on the ranges and whether the
    reference kept the SLO when re-measured. Over the guide's procedure, also what the
    procedure cost (``procedure``: its record)."""
    out = {}
    for label in labels.REFERENCES:
        r = references.get(label)
        if not r or not r.get("items_per_s_median"):
            continue
        cost = {}
        if label == labels.GUIDE_PROCEDURE and procedure:
            cost = {
                "procedure_step": (procedure.get("choice") or {}).get("step"),
                "procedure_measurements": procedure.get("measurements"),
                "procedure_wall_s": procedure.get("wall_s"),
            }
        out[label] = {
            "gain": winner["items_per_s_median"] / r["items_per_s_median"],
            "winner_items_per_s_median": winner["items_per_s_median"],
            "winner_items_per_s_min": winner["items_per_s_min"],
            "winner_items_per_s_max": winner["items_per_s_max"],
            "winner_runs": winner["runs"],
            "reference_trial": r["trial"],
            "reference_items_per_s_median": r["items_per_s_median"],
            "reference_items_per_s_min": r["items_per_s_min"],
            "reference_items_per_s_max": r["items_per_s_max"],
            "reference_p99_ms_median": r["p99_ms_median"],
            "reference_runs": r["runs"],
            "reference_feasible": bool(r.get("feasible")),
            "verdict": verdict(winner, r),
            **cost,
        }
    return out


def _verdict_text(name: str, g: dict) -> str:
    """The plain sentence after a gain: whether tuning beat the reference on the ranges."""
    if not g.get("reference_feasible", True):
        return f"{name} missed the SLO when re-measured"
    return {
        "ahead": "tuning beats it: the ranges do not overlap",
        "tied": f"{name} is as good on this machine: the ranges overlap",
        "behind": f"{name} is better: its range lies above the winner's",
    }.get(g.get("verdict"), "")


def _cost_text(g: dict) -> str:
    if g.get("procedure_measurements") is None:
        return ""
    return (
        f"; the procedure took {g['procedure_measurements']} measurements, "
        f"{g['procedure_wall_s']:.0f} s, and chose its step '{g.get('procedure_step')}'"
    )


def resource_text(w: dict) -> str:
    """What the winner cost to run, where the backend measured it: items per core-second of the
    server's CPU and its peak memory."""
    parts = []
    if w.get("items_per_core_s_median"):
        parts.append(f"served {w['items_per_core_s_median']:,.0f} items per core-second")
    if w.get("server_peak_memory_mb_max"):
        parts.append(f"peaked at {w['server_peak_memory_mb_max']:,.0f} MiB")
    return " and ".join(parts)


def gain_lines(summary: dict) -> list[str]:
    """The headline for the terminal: the server measured, then one line per gain."""
    lines = []
    if summary.get("server"):
        lines.append(f"measured on {summary['server']}")
    cost = resource_text(summary.get("winner") or {})
    if cost:
        lines.append(f"the winner {cost}")
    winner = (summary.get("winner") or {}).get("trial")
    for label, g in (summary.get("gains") or {}).items():
        name = labels.REFERENCE_NAMES.get(label, label)
        if g["reference_trial"] == winner:
            lines.append(f"the winner is {name} itself{_cost_text(g)}")
            continue
        said = _verdict_text(name, g) if "verdict" in g else ""
        lines.append(
            f"{g['gain']:.2f}x the throughput of {name}: "
            f"{g['winner_items_per_s_median']:,.0f} items/s median "
            f"({g['winner_items_per_s_min']:,.0f}-{g['winner_items_per_s_max']:,.0f}) against "
            f"{g['reference_items_per_s_median']:,.0f} "
            f"({g['reference_items_per_s_min']:,.0f}-{g['reference_items_per_s_max']:,.0f}), "
            f"{g['winner_runs']} and {g['reference_runs']} runs" + (f"; {said}" if said else "")
            + _cost_text(g)
        )
    return lines


def _with_references(rows: list[dict], summary: dict) -> list[dict]:
    """The printed table: the judged configs, then the references not among them."""
    shown = {r["trial"] for r in rows}
    extra = []
    for r in (summary.get("references") or {}).values():
        if r["trial"] not in shown:  # two references of one config are one row
            shown.add(r["trial"])
            extra.append(r)
    return rows + extra


def _crown(summary: dict, rows: list[dict], out: Path, slo, echo) -> dict:
    winner = rows[0]  # rank_by_spread: the tie rule has chosen among the tied
    others = [r for r in rows[1:] if r["feasible"]]
    tie = any(remeasure.overlap(winner, r) for r in others)
    base = summary["batching_off_items_per_s"]
    gain = winner["items_per_s_median"] / base if base else None
    best_file = out / "best_batching_parameters.txt"
    summary.update(
        winner=winner,
        indistinguishable_from_runner_up=tie,
        tied_with_winner=[r["trial"] for r in others if remeasure.overlap(winner, r)],
        ranking_rule=remeasure.TIE_RULE,
        gain_over_batching_off=gain,
        gains=gains(winner, summary.get("references") or {}, summary.get("guide_procedure")),
        best_parameters_file=best_file.name,
    )
    _outcome(summary, labels.EXIT_OK)
    outputs.write_json_atomic(out / "summary.json", summary)
    cfg = TrialConfig.from_dict(winner["config"])
    if cfg.batching is not None:
        outputs.write_text_atomic(best_file, cfg.batching.to_text())
    else:
        outputs.write_text_atomic(
            best_file, "# batching off serves best: start the server without --enable_batching\n"
        )
    deploy.write(out, winner)  # deploy/: docker run, compose, Kubernetes (harness.tuning.deploy)
    echo(outputs.summary_table(_with_references(rows, summary), slo.p99_ms, tie, None))
    echo("\n" + "\n".join(gain_lines(summary)))
    echo(f"best parameters: {best_file}")
    return summary
