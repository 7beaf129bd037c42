"""Several models in one experiment: [[models]], load.traffic, per-model SLOs and
search.per_model_batching, read from TOML, checked up front with one-line errors, written back."""

from __future__ import annotations

import tomllib

import pytest

from harness import config
from harness.config import parse_traffic
from harness.errors import ConfigError

TWO = {
    "models": [{"demo": "ranker"}, {"demo": "mlp", "slo_p99_ms": 20}],
    "load": {"traffic": "ranker:70,mlp:30"},
}


def test_two_models_read_with_the_first_as_the_model():
    exp = config.from_dict(TWO)
    assert [m.served_name for m in exp.served_models] == ["ranker", "mlp"]
    assert exp.model.demo == "ranker" and exp.multi_model
    assert exp.served_models[1].slo_p99_ms == 20.0 and exp.served_models[0].slo_p99_ms is None
    assert exp.traffic() == "ranker:70,mlp:30"


def test_one_model_stays_the_default_and_no_split():
    exp = config.from_dict({"model": {"demo": "mlp"}})
    assert exp.served_models == (exp.model,) and not exp.multi_model
    assert exp.traffic() == "" and exp.search.per_model_batching == ()


def test_every_bundled_experiment_still_loads():
    for path in sorted(config.BUNDLED_DIR.glob("*.toml")):
        exp = config.load(path)
        assert exp.served_models


def test_the_two_model_experiment_ships():
    exp = config.load_experiment("two_models")
    assert [m.served_name for m in exp.served_models] == ["ranker", "mlp"]
    assert parse_traffic(exp.load.traffic) == [("ranker", 0.7), ("mlp", 0.3)]


def test_no_split_given_is_an_even_split():
    exp = config.from_dict({"models": TWO["models"]})
    assert parse_traffic(exp.traffic()) == [("ranker", 0.5), ("mlp", 0.5)]


def test_round_trip_through_toml():
    exp = config.from_dict({**TWO, "search": {"per_model_batching": True}})
    again = config.from_dict(tomllib.loads(config.to_toml(exp)))
    assert again.models == exp.models and again.model == exp.model
    assert again.load.traffic == exp.load.traffic
    assert again.search.per_model_batching == ("ranker", "mlp")


def test_per_model_batching_true_means_every_served_model():
    exp = config.from_dict({**TWO, "search": {"per_model_batching": True}})
    assert exp.search.per_model_batching == ("ranker", "mlp")
    exp = config.from_dict({**TWO, "search": {"per_model_batching": False}})
    assert exp.search.per_model_batching == ()
    exp = config.from_dict({"model": {"path": "/srv/m/ranker_v2"}, "search": {"per_model_batching": True}})
    assert exp.search.per_model_batching == ("ranker_v2",)


@pytest.mark.parametrize(
    "data, message",
    [
        ({**TWO, "load": {"traffic": "ranker:70,bert:30"}}, "load.traffic names 'bert', which is not a served model"),
        ({**TWO, "load": {"traffic": "ranker:70,mlp:0"}}, "load.traffic: traffic split 'ranker:70,mlp:0': 'mlp:0' is not model:weight with a weight > 0"),
        ({**TWO, "load": {"traffic": "ranker:x"}}, "is not model:weight"),
        ({**TWO, "load": {"traffic": "ranker:1,ranker:2"}}, "model 'ranker' is given twice"),
        ({"models": [{"demo": "mlp"}, {"demo": "mlp"}]}, "models[1] is served as 'mlp' like an earlier one"),
        ({"model": {"demo": "mlp"}, "models": [{"demo": "ranker"}]}, "give [model] or [[models]], not both"),
        ({"models": {"demo": "mlp"}}, "models must be a list of tables"),
        ({"models": [{"demo": "mlp", "slo_p99_ms": 0}]}, "slo_p99_ms must be > 0"),
        ({"models": [{"demo": "mlp", "slo_max_error_rate": 2}]}, "slo_max_error_rate must be between 0 and 1"),
        ({"models": [{"demo": "mlp", "color": 1}]}, "unknown key models[0].color"),
        ({**TWO, "search": {"per_model_batching": ["bert"]}}, "search.per_model_batching names 'bert'"),
        ({**TWO, "search": {"per_model_batching": True, "allowed_batch_sizes": True}}, "not allowed_batch_sizes"),
        ({**TWO, "load": {"payload": "x.json", "traffic": "ranker:1"}}, "load.payload with several models"),
        ({"models": [{"demo": "mlp"}, {"demo": "ranker", "signature": "other"}]}, "different signatures"),
    ],
)
def test_bad_multi_model_settings_are_one_line_errors(data, message):
    with pytest.raises(ConfigError) as err:
        config.from_dict(data, "exp.toml")
    text = str(err.value)
    assert message in text and "\n" not in text
    assert text.startswith("exp.toml: ")


def test_traffic_given_as_an_override():
    data = {"models": TWO["models"]}
    config.apply_override(data, "load.traffic=ranker:9,mlp:1", "--set")
    assert parse_traffic(config.from_dict(data).load.traffic) == [("ranker", 0.9), ("mlp", 0.1)]
