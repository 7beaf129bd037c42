"""The fitted constants reach the server model built from a profile, and the kernel's records."""

from harness.batching import BatchingParameters
from harness.sim.fitted import FITTED
from harness.sim.model import Prepared, ServerModel, Workload, simulate
from tests.sim.test_guide_plan import ranker_like


def test_a_model_from_a_profile_takes_the_fitted_constants_unless_given_others():
    prof = ranker_like()
    assert ServerModel.from_profile(prof, "grpc").fe_weight == FITTED["fe_weight"]
    other = ServerModel.from_profile(prof, "grpc", fitted={"fe_weight": 3.5})
    assert other.fe_weight == 3.5
    # and it changes what is predicted: the request path competes with a running batch
    wl = Workload(rate=500, window_s=2.0)
    cfg = BatchingParameters(max_batch_size=8, batch_timeout_micros=0, num_batch_threads=1)
    one = simulate(
        cfg, Prepared(wl, ServerModel.from_profile(prof, "grpc", fitted={"fe_weight": 1.0}))
    )
    four = simulate(
        cfg, Prepared(wl, ServerModel.from_profile(prof, "grpc", fitted={"fe_weight": 4.0}))
    )
    assert one.p99_ms != four.p99_ms


def test_the_bound_terms_default_to_the_models_own_p99():
    from harness.sim.guide import bound_terms

    assert bound_terms({}) == {"closed": 1.0, "open_rate": 0.0}
    assert bound_terms({"closed": 1.3})["closed"] == 1.3
    assert bound_terms() == {"closed": 1.0, "open_rate": 0.0, **(FITTED.get("p99_bound") or {})}


def _judged(monkeypatch, exp, terms):
    import dataclasses

    from harness.sim import guide
    from harness.tuning.guided import GuidedSearch
    from harness.tuning.space import TrialConfig

    monkeypatch.setitem(guide.FITTED, "p99_bound", terms)
    predictor = guide.Predictor(exp, ranker_like(), cores=1)
    params = BatchingParameters(max_batch_size=32, batch_timeout_micros=1000)
    figures = predictor.predict(params, None)
    # an SLO the model's own p99 keeps, with the guide's margin, by a factor of 1.5
    slo = dataclasses.replace(exp.slo, p99_ms=figures["predicted_p99_no_pause_ms"] * 1.5 / 0.85)
    judged = GuidedSearch(dataclasses.replace(exp, slo=slo), predictor, cores=1).predict(
        TrialConfig(batching=params)
    )
    return figures, judged["predicted_feasible"]


def test_the_guide_holds_a_closed_loops_widened_p99_to_the_slo(monkeypatch):
    from harness.config import Experiment, ModelConfig

    exp = Experiment(model=ModelConfig(demo="ranker")).check()
    figures, feasible = _judged(monkeypatch, exp, {"closed": 1.0})
    assert feasible and figures["predicted_p99_bound_ms"] == figures["predicted_p99_no_pause_ms"]
    figures, feasible = _judged(monkeypatch, exp, {"closed": 2.0})
    assert figures["predicted_p99_bound_ms"] == round(2.0 * figures["predicted_p99_no_pause_ms"], 2)
    assert not feasible


def test_an_open_loops_bound_is_its_p99_at_a_higher_rate(monkeypatch):
    import dataclasses

    from harness.config import Experiment, ModelConfig

    exp = Experiment(model=ModelConfig(demo="ranker")).check()
    exp = dataclasses.replace(exp, load=dataclasses.replace(exp.load, rate=1000.0))
    figures, feasible = _judged(monkeypatch, exp, {"open_rate": 0.0})
    assert feasible and figures["predicted_p99_bound_ms"] == figures["predicted_p99_no_pause_ms"]
    # 1.5 x 1,000/s brings ranker-like near what it serves at most: p99 grows past 1.5x
    figures, feasible = _judged(monkeypatch, exp, {"open_rate": 0.5})
    assert figures["predicted_p99_bound_ms"] > 1.5 * figures["predicted_p99_no_pause_ms"]
    assert not feasible
