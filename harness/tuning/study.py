"""The study driver: baselines, the Optuna search under the SLO, then a noise-aware winner.

Optuna's storage is the study's memory (SQLite in the study folder by default): every finished
trial is in it the moment it ends, so an interrupted study resumes where it stopped. A trial that
fails (a config the server refuses, a crash, a load error) is recorded with its reason and the
study goes on.

Nothing is written to the study folder before the experiment is known to be runnable: the
backend is made and checked (a missing image, a missing model directory) first.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from harness import envinfo, labels
from harness.batching import BatchingParameters, schedulable_cores
from harness.config import BackendKind, Experiment, to_toml
from harness.errors import ConfigError, HarnessError
from harness.tuning import guide_procedure, loop, outputs, progress, winner
from harness.tuning.space import TrialConfig, params_for, suggest
from harness.tuning.storage import StudyLock, open_storage
from harness.tuning.trial import TrialRunner

log = logging.getLogger("harness.tune")


class Tuner:
    def __init__(
        self,
        exp: Experiment,
        results_dir: Path,
        *,
        storage: str | None = None,
        echo=print,
        guide: str | None = None,
        baseline: BatchingParameters | None = None,
        models_dir: Path = Path("models"),
    ) -> None:
        """``baseline``: the user's current batching parameters (``--baseline FILE``), measured
        first and re-measured beside the winner."""
        import optuna

        self.optuna = optuna
        self.exp = exp
        self.guide_mode = guide  # "simulate": the simulator picks the real trials (tuning.guided)
        self.guide = None  # the guided search, made when first needed (it may measure a profile)
        name = exp.study.name or default_study_name(exp)
        self.name = name
        self.dir = Path(results_dir) / name
        self.storage_url = (
            storage or exp.study.storage or f"sqlite:///{(self.dir / 'study.db').resolve()}"
        )
        self.echo = echo
        self.user_baseline = TrialConfig(batching=baseline) if baseline is not None else None
        self.clock = progress.Clock()
        self.runner = TrialRunner(exp, models_dir)
        try:
            self._preflight()
        except BaseException:
            self.runner.close()
            raise
        self.dir.mkdir(parents=True, exist_ok=True)
        cpus = self.runner.server_cpus
        self.cores = len(cpus) if cpus else schedulable_cores()  # the server's
        if self.runner.removed_leftovers:
            echo(f"removed {len(self.runner.removed_leftovers)} leftovers of a killed run")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        for handler in logging.getLogger("optuna").handlers:
            handler.addFilter(_no_tracebacks)
        pareto = exp.study.mode == "pareto"
        # Several tuners may share this storage (see harness.tuning.loop and storage).
        self.dir.mkdir(parents=True, exist_ok=True)  # only once the experiment proved valid
        self.lock = StudyLock(self.storage_url, name)
        self.tuner = loop.tuner_id()
        self.study = optuna.create_study(
            study_name=name,
            storage=open_storage(self.storage_url),
            load_if_exists=True,
            directions=["maximize", "minimize"] if pareto else ["maximize"],
            sampler=self._sampler(),
        )
        self.study.sampler = self._sampler(loop.register(self.study, self.lock, self.tuner))
        outputs.write_text_atomic(self.dir / "experiment.toml", to_toml(exp))
        # what this run measures on, for the report (each resumed run records its own)
        env = envinfo.collect(exp, self.runner.backend)
        name = server_name(exp, self.runner.backend)
        if name and isinstance(env.get("server"), dict):
            env["server"].setdefault("name", name)
        self.server = labels.server_label(env.get("server"))
        outputs.write_json_atomic(self.dir / "environment.json", env)

    def _preflight(self) -> None:
        """Refuse the study now when no trial could start."""
        if not self.runner.backend.can_restart:
            raise ConfigError(
                f"the {self.exp.server.backend} backend cannot restart the server with new batching parameters",
                hint="tune with the process or docker backend; use 'harness run' to measure an external server",
            )
        preflight = getattr(self.runner.backend, "preflight", None)
        if preflight:  # a missing image
            preflight()

    def _sampler(self, tuner_index: int = 0):
        return make_sampler(self.exp.study, tuner_index)

    # -- running --------------------------------------------------------------------------------

    def finished(self) -> int:
        """Finished trials that count against the budget (copies of a repeated config and the
        guide's procedure's steps do not)."""
        states = self.optuna.trial.TrialState
        done = self.study.get_trials(
            deepcopy=False, states=(states.COMPLETE, states.FAIL, states.PRUNED)
        )
        return sum(1 for t in done if not loop.is_copy(t) and not loop.is_guide_step(t))

    def _guided(self):
        if self.guide is None:
            from harness.tuning.guided import make_guided

            self.guide = make_guided(self.exp, self.cores, self.echo)
        return self.guide

    def _enqueue_first(self, n_trials: int) -> None:
        """The study's first trials (baselines, then the guide's procedure's first phase);
        called once per study, under the study lock."""
        self._enqueue_user_baseline()
        if self.guide_mode == "simulate":
            self._guided().enqueue(self.study, n_trials, seed=self.exp.study.seed)
        elif self.exp.study.baselines:
            loop.enqueue_baselines(self.study, self.exp.search, self.cores)
        self._advance_procedure()

    def _advance_procedure(self) -> None:
        """The guide's procedure's next phase, once the one before is measured (under the study
        lock; a no-op without ``[study] guide_procedure``)."""
        device = self.exp.study.guide_procedure
        if device:
            guide_procedure.advance(self.study, device, self.exp.search, self.cores, self.exp.slo)

    def _enqueue_user_baseline(self) -> bool:
        """Queue the user's baseline unless the study has it (measured, or waiting); inside the
        search space it goes in with its parameters, so the sampler learns from it."""
        if self.user_baseline is None:
            return False
        cfg = self.user_baseline.as_dict()
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            if a.get("baseline") == labels.USER_BASELINE and a.get("config") == cfg:
                return False
        params = params_for(self.user_baseline, self.exp.search, self.cores)
        attrs = {"baseline": labels.USER_BASELINE, "config": cfg}
        if params:
            attrs["has_params"] = True
        self.study.enqueue_trial(params or {}, user_attrs=attrs)
        return True

    def _procedure_left(self) -> bool:
        """Steps of the guide's procedure still waiting (a study resumed with it)."""
        waiting = self.optuna.trial.TrialState.WAITING
        return any(
            loop.is_guide_step(t) and t.state == waiting for t in self.study.get_trials(deepcopy=False)
        )

    def _winner_runs(self) -> int:
        """The winner step's measurements, estimated (for the ETA)."""
        refs = (
            (2 if self.exp.study.baselines else 0)
            + (self.user_baseline is not None)
            + bool(self.exp.study.guide_procedure)  # its choice, when not a baseline's config
        )
        return progress.winner_runs(self.exp.study.top_k, self.exp.study.repeats, refs)

    def run(self, n_trials: int, timeout: float | None = None) -> dict:
        if self.user_baseline is not None and self.study.get_trials(deepcopy=False):
            with self.lock.hold():  # a study that started without this --baseline
                if self._enqueue_user_baseline() and self.finished() >= n_trials:
                    self.echo(
                        f"your baseline is queued, but the study's {n_trials} trials are done: "
                        "raise --trials by one to measure it"
                    )
        if self.exp.study.guide_procedure and self.study.get_trials(deepcopy=False):
            with self.lock.hold():  # a resumed study: the phase it stopped in, or its record
                self._advance_procedure()
        self.clock = progress.Clock()
        remaining = max(0, n_trials - self.finished())
        if remaining == 0 and not self._procedure_left():
            self.echo(f"study {self.name}: {self.finished()} trials already done; nothing to run")
        else:
            self.echo(
                f"study {self.name}: {self.finished()} done, up to {remaining} more -> {self.dir}"
                f" (tuner {self.tuner})"
            )
            t0 = time.monotonic()
            ran = loop.run_trials(
                self.study,
                self.lock,
                objective=self._objective,
                enqueue_first=self._enqueue_first,
                after_trial=self._after_trial,
                n_trials=n_trials,
                timeout=timeout,
                space=self.exp.search,
                cores=self.cores,
                seed=self.exp.study.seed,
                mode=self.exp.study.mode,
                tuner=self.tuner,
                echo=self.echo,
            )
            self.echo(f"search done in {time.monotonic() - t0:.0f}s ({ran} trials by this tuner)")
        outputs.write_trials_csv(self.study, self.dir / "trials.csv")
        # The winner step runs once, in the tuner that finishes last (no trial left running).
        busy = loop.running_elsewhere(self.study)
        if busy:
            self.echo(
                f"{busy} trial(s) still running on other tuners: the last tuner to finish "
                "re-measures the winner (or run this command again once they are done)"
            )
            return {"study": self.name, "winner": None, "reason": "other tuners still running"}
        with self.lock.hold("winner", wait=False) as mine:
            if not mine:
                self.echo("another tuner is re-measuring the winner; see its summary")
                return {"study": self.name, "winner": None, "reason": "another tuner chose it"}
            return self.pick_winner()

    def _objective(self, trial):
        attrs = trial.user_attrs
        if "config" in attrs:  # an enqueued baseline: measured as given, not sampled
            cfg = TrialConfig.from_dict(attrs["config"])
        else:
            cfg = suggest(trial, self.exp.search, self.cores)
            trial.set_user_attr("config", cfg.as_dict())
        if self.guide_mode == "simulate" and "predicted_items_per_s" not in attrs:
            self._guided().attach_prediction(trial, cfg)
        try:
            result = self.runner.measure(cfg, self.dir / "trials" / f"{trial.number:04d}")
        except HarnessError as exc:
            trial.set_user_attr("fail_reason", fail_reason(exc))
            # the whole story (the server's last log lines) beside the trial's other files
            outputs.write_text_atomic(
                self.dir / "trials" / f"{trial.number:04d}" / "failure.txt", f"{exc}\n"
            )
            raise
        return loop.record(trial, result, self.exp.slo, self.exp.study.mode)

    def _after_trial(self, study, trial) -> None:
        attrs = trial.user_attrs
        if loop.is_guide_step(trial):
            with self.lock.hold():
                self._advance_procedure()
        outputs.write_trials_csv(study, self.dir / "trials.csv")
        self.clock.lap(measured=not loop.is_copy(trial))
        if loop.is_copy(trial):  # already said ("same config as trial N"); nothing measured
            return
        cfg = TrialConfig.from_dict(attrs.get("config", {}))
        label = attrs.get("baseline") or cfg.describe()
        n = self.finished()
        total = self.exp.study.trials
        clock = self.clock.status(max(0, total - n) + self._winner_runs())
        where = f"[{n:>3}/{total}]"
        if loop.is_guide_step(trial):  # beside the trial budget: the phase it is in
            where = f"[guide phase {attrs.get('guide_phase', 0) + 1}/3]"
        if trial.state != self.optuna.trial.TrialState.COMPLETE:
            self.echo(f"{where} {label}: FAILED {attrs.get('fail_reason', '')} | {clock}")
            return
        best = best_feasible(study)
        best_text = (
            f"best {best.user_attrs['items_per_s']:.0f} items/s (#{best.number})"
            if best
            else "no feasible trial yet"
        )
        mark = "ok " if attrs.get("feasible") else "SLO"
        predicted = (
            f" (predicted {attrs['predicted_items_per_s']:.0f}, p99 {attrs['predicted_p99_ms']})"
            if "predicted_items_per_s" in attrs
            else ""
        )
        self.echo(
            f"{where} {label}: {attrs['items_per_s']:.0f} items/s, p99 {attrs['p99_ms']:.1f} ms, "
            f"errors {attrs['error_rate']:.1%} {mark}{predicted} | {best_text} | {clock}"
        )

    # -- the winner -----------------------------------------------------------------------------

    def pick_winner(self) -> dict:
        return winner.pick_winner(
            self.study,
            name=self.name,
            out=self.dir,
            slo=self.exp.slo,
            settings=self.exp.study,
            measure=self.runner.measure,
            echo=self.echo,
            server=self.server,
            user_baseline=self.user_baseline.as_dict() if self.user_baseline else None,
            clock=self.clock,
            guide_procedure=self.study.user_attrs.get(guide_procedure.RECORD),
        )

    def close(self) -> None:
        self.runner.close()
        self.lock.close()


def _no_tracebacks(record: logging.LogRecord) -> bool:
    """Optuna logs every failed trial with a traceback: we print the reason ourselves (and
    write it to trials.csv and failure.txt), and Ctrl-C is not an error at all."""
    if record.exc_info:
        if isinstance(record.exc_info[1], KeyboardInterrupt):
            return False
        record.exc_info = None
        record.exc_text = None
        return False  # the trial's reason is echoed by _after_trial
    return "failed with value None" not in record.getMessage()


def fail_reason(exc: Exception) -> str:
    """One line: what failed, and the last thing the server said about it."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    reason = lines[0]
    said = [ln for ln in lines[1:] if "error" in ln.lower()]
    if said and said[-1] not in reason:
        reason += " | " + said[-1]
    return reason[:500]


def make_sampler(s, tuner_index: int = 0):
    """The study's sampler (``s``: the experiment's [study]); tuner ``tuner_index`` of a shared
    study gets its own seed, so two tuners do not draw the same random start-up configs."""
    import optuna

    seed = None if s.seed is None else s.seed + 1000 * tuner_index
    # Constraints reach the samplers through Trial.set_constraint (see loop.record).
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # constant_liar: trials other tuners are running count as bad, so they are not re-proposed
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, constant_liar=True)


def server_name(exp: Experiment, backend) -> str:
    """What environment.json's server entry cannot say yet: which request path the reference
    server takes (native when it is built). Empty for other servers (the entry names them)."""
    if exp.server.backend != BackendKind.PROCESS or not getattr(backend, "is_reference", False):
        return ""
    from harness.refserver.native import launch  # standard library only: no TensorFlow

    try:
        path = launch.choose()
    except HarnessError:  # a bad HARNESS_REFSERVER_IMPL: every trial will say so
        return "the reference server"
    return f"the reference server ({'native' if path == 'native' else 'Python'} path)"


def default_study_name(exp: Experiment) -> str:
    model = exp.model.name or exp.model.demo or Path(exp.model.path).name
    return f"{model}-{exp.load.protocol}-{exp.server.backend}"


def best_feasible(study):
    ranked = loop.ranked_feasible(study)
    return ranked[0] if ranked else None
