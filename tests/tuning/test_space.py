"""The search space's inverse (parameters for a config) and the neighbours the trial loop measures
instead of a repeated config. The loop itself runs here against a table of figures in place of a
server: what is under test is its bookkeeping (budget, copies, neighbours), not a measurement.
And the SLO rule (``loop.score``) every measurement is judged by."""

import dataclasses
import itertools
from pathlib import Path

import optuna
import pytest

from harness import config, labels
from harness.batching import BatchingParameters
from harness.errors import HarnessError
from harness.tuning import loop
from harness.tuning.space import TrialConfig, baselines, neighbours, params_for, suggest
from harness.tuning.study import make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]


def default_space():
    return config.load(ROOT / "experiments" / "default.toml").search


def cfg(mbs, t, thr, q):
    return TrialConfig(
        batching=BatchingParameters(
            max_batch_size=mbs,
            batch_timeout_micros=t,
            num_batch_threads=thr,
            max_enqueued_batches=q,
        )
    )


def suggested(params, space, cores):
    """What ``suggest`` returns for a trial enqueued with ``params``."""
    study = optuna.create_study()
    study.enqueue_trial(params)
    return suggest(study.ask(), space, cores)


@pytest.mark.parametrize(
    "c",
    [cfg(64, 0, 1, 1_000_000), cfg(1, 100, 2, 1), cfg(128, 100_000, 1, 16), cfg(8, 3162, 2, 4)],
    ids=str,
)
def test_params_for_round_trips_through_suggest(c):
    space = default_space()
    params = params_for(c, space, 2)
    assert params is not None
    assert suggested(params, space, 2) == c


def test_configs_outside_the_space_have_no_parameters():
    space = default_space()
    assert params_for(TrialConfig(batching=None), space, 2) is None
    assert params_for(cfg(8, 0, 8, 1_000_000), space, 2) is None  # 8 threads on 2 cores
    assert params_for(cfg(3, 0, 1, 1_000_000), space, 2) is None  # not a listed batch size
    assert params_for(cfg(8, 50, 1, 1_000_000), space, 2) is None  # below the 100 us floor
    found = {label: params_for(c, space, 2) is not None for label, c in baselines(space, 2).items()}
    assert found == {
        labels.BATCHING_OFF: False,
        "batching guide CPU start": True,
        "commonly copied config": False,
    }


def test_neighbours_are_one_step_away_and_inside_the_space():
    space = default_space()
    centre = cfg(64, 1000, 1, 64)
    got = {n.describe() for n in neighbours(centre, space, 2)}
    assert got == {
        "mbs=32 t=1000us thr=1 q=64",
        "mbs=128 t=1000us thr=1 q=64",
        "mbs=64 t=500us thr=1 q=64",
        "mbs=64 t=2000us thr=1 q=64",
        "mbs=64 t=0us thr=1 q=64",
        "mbs=64 t=1000us thr=2 q=64",
        "mbs=64 t=1000us thr=1 q=16",
        "mbs=64 t=1000us thr=1 q=1000000",
    }
    edge = {n.describe() for n in neighbours(cfg(128, 0, 2, 1_000_000), space, 2)}
    assert edge == {
        "mbs=64 t=0us thr=2 q=1000000",
        "mbs=128 t=100us thr=2 q=1000000",
        "mbs=128 t=0us thr=1 q=1000000",
        "mbs=128 t=0us thr=2 q=64",
    }
    floor = {n.batching.batch_timeout_micros for n in neighbours(cfg(8, 150, 1, 1), space, 2)}
    assert floor == {0, 150, 300}  # 75 us is below the range's 100 us
    for n in neighbours(centre, space, 2):
        assert params_for(n, space, 2) is not None


class TableTuner:
    """The trial loop (``loop.run_trials``) with figures from a table in place of a server."""

    SLO = config.SloConfig(p99_ms=1.0, max_error_rate=1.0)  # every figure below keeps it

    def __init__(self, space, figures, sampler="random", seed=0):
        self.settings = config.StudyConfig(name="t", sampler=sampler, seed=seed)
        self.space = space
        self.study = optuna.create_study(direction="maximize", sampler=make_sampler(self.settings))
        self.figures = figures
        self.measured = []
        self.lines = []

    def run(self, n_trials):
        return loop.run_trials(
            self.study,
            objective=self.objective,
            enqueue_first=lambda _n: loop.enqueue_baselines(self.study, self.space, 2),
            after_trial=lambda study, trial: None,
            n_trials=n_trials,
            space=self.space,
            cores=2,
            seed=self.settings.seed,
            tuner="table",
            echo=self.lines.append,
        )

    def objective(self, trial):
        c = TrialConfig.from_dict(trial.user_attrs["config"])
        self.measured.append(c)
        value = self.figures(c)
        if value is None:
            trial.set_user_attr("fail_reason", "refused")
            raise HarnessError("refused")
        return loop.record(
            trial, {"items_per_s": value, "p99_ms": 0.0, "error_rate": 0.0}, self.SLO
        )


def small_space():
    return config.SearchConfig(
        max_batch_size=config.Range(choices=(4, 8, 16)),
        batch_timeout_micros=config.Range(choices=(0, 1000)),
        num_batch_threads=config.Range(low=1, high=2),
        max_enqueued_batches=config.Range(choices=(1, 1_000_000)),
    )


def throughput(c):
    if c.batching is None:
        return 100.0
    b = c.batching
    if b.num_batch_threads > 2:
        return None  # the commonly copied config's 8 threads: refused here, as a failure
    return b.max_batch_size * 10.0 + b.num_batch_threads - b.batch_timeout_micros / 1000


def test_copies_do_not_spend_the_budget_and_their_neighbours_are_measured():
    # 24 configs in the space, 20 trials: the random sampler repeats itself often
    tuner = TableTuner(small_space(), throughput, sampler="random", seed=3)
    ran = tuner.run(20)
    trials = tuner.study.get_trials()
    copies = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert copies, "the random sampler never repeated a config: the test proves nothing"
    assert ran == 20 == loop.counted(trials) == len(tuner.measured)
    keys = [repr(c) for c in tuner.measured]
    assert len(set(keys)) == len(keys), "a config was measured twice"
    followed = [t for t in trials if "neighbour_of" in t.user_attrs and t.state.is_finished()]
    assert followed and all("duplicate_of" not in t.user_attrs for t in followed)
    for t in followed:  # each is one step from the config that was repeated
        source = TrialConfig.from_dict(trials[t.user_attrs["neighbour_of"]].user_attrs["config"])
        near = [n.as_dict() for n in neighbours(source, small_space(), 2)]
        assert t.user_attrs["config"] in near
        assert t.params, "an enqueued neighbour must carry its parameters to the sampler"
    # the baselines ran once each, the failed one with its reason
    names = [t.user_attrs.get("baseline") for t in trials if "duplicate_of" not in t.user_attrs]
    assert sorted(filter(None, names)) == sorted(baselines(small_space(), 2))


def test_an_exhausted_space_stops_instead_of_copying_forever():
    space = config.SearchConfig(
        max_batch_size=config.Range(choices=(4, 8)),
        batch_timeout_micros=config.Range(choices=(0,)),
        num_batch_threads=config.Range(low=1, high=1),
        max_enqueued_batches=config.Range(choices=(1_000_000,)),
    )
    tuner = TableTuner(space, throughput, sampler="random")
    ran = tuner.run(10)
    # the 3 baselines (none inside this space; the copied config refused) and the 2 configs
    assert ran == len(tuner.measured) == 5
    assert any("nearly exhausted" in line for line in tuner.lines)
    assert sum("duplicate_of" in t.user_attrs for t in tuner.study.get_trials()) == 10


def test_every_config_in_a_small_space_is_reachable():
    # with neighbours filling in for repeats, 24 trials measure the whole 24-config space
    space = small_space()
    tuner = TableTuner(space, throughput, sampler="tpe", seed=1)
    tuner.run(26)
    measured = {repr(c) for c in tuner.measured if c.batching and c.batching.num_batch_threads <= 2}
    every = {
        repr(cfg(m, t, thr, q))
        for m, t, thr, q in itertools.product((4, 8, 16), (0, 1000), (1, 2), (1, 1_000_000))
    }
    assert measured == every


def test_splitting_and_padding_are_suggested_over_many_batch_sizes():
    # max_execution_batch_size has one choice list whatever max_batch_size the trial drew
    # (optuna refuses a categorical whose choices change), capped at that max_batch_size
    space = dataclasses.replace(
        default_space(), large_batch_splitting=True, allowed_batch_sizes=True
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    split = 0
    for _ in range(60):
        b = suggest(study.ask(), space, 2).batching
        if b.enable_large_batch_splitting:
            split += 1
            assert 1 <= b.max_execution_batch_size <= b.max_batch_size
        top = b.max_execution_batch_size or b.max_batch_size
        assert not b.allowed_batch_sizes or b.allowed_batch_sizes[-1] == top
    assert split > 10
