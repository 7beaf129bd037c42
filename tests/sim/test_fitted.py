"""The fitted constants reach the server model built from a profile, and the kernel's records."""

from harness.batching import BatchingParameters
from harness.sim import kernel
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


def test_the_kernel_reads_every_params_field_in_the_records_order():
    assert kernel.Params._fields == kernel.PARAMS.names


def test_the_p99_bound_widens_the_models_p99_by_the_factor_of_the_workloads_kind():
    from harness.sim.guide import p99_bound

    factors = {"open": 2.0, "closed": 1.25}
    assert p99_bound(10.0, True, factors) == 20.0
    assert p99_bound(10.0, False, factors) == 12.5
    assert p99_bound(10.0, True, {}) == 10.0  # no factor fitted: the model's own
    assert p99_bound(None, True, factors) is None
    fitted = FITTED.get("p99_bound") or {}
    assert p99_bound(10.0, True) == 10.0 * fitted.get("open", 1.0)


def test_the_guide_holds_the_bound_to_the_slo(monkeypatch):
    import dataclasses

    from harness.config import Experiment, ModelConfig
    from harness.sim import guide
    from harness.tuning.guided import GuidedSearch
    from harness.tuning.space import TrialConfig

    monkeypatch.setitem(guide.FITTED, "p99_bound", {"closed": 3.0, "open": 3.0})
    exp = Experiment(model=ModelConfig(demo="ranker")).check()
    predictor = guide.Predictor(exp, ranker_like(), cores=1)
    params = BatchingParameters(max_batch_size=32, batch_timeout_micros=1000)
    figures = predictor.predict(params, None)
    raw = figures["predicted_p99_no_pause_ms"]
    assert figures["predicted_p99_bound_ms"] == round(3.0 * raw, 2)
    # an SLO the model's own p99 keeps (with the guide's margin) and the bound does not
    slo = dataclasses.replace(exp.slo, p99_ms=raw * 2.0)
    judged = GuidedSearch(dataclasses.replace(exp, slo=slo), predictor, cores=1).predict(
        TrialConfig(batching=params)
    )
    assert not judged["predicted_feasible"]
