import pytest

from harness import config
from harness.errors import ConfigError

GOOD = """
[model]
demo = "mlp"
[load]
users = 8
[search]
max_batch_size = [1, 8]
"""


def write(tmp_path, text):
    p = tmp_path / "exp.toml"
    p.write_text(text)
    return p


def test_reads_and_fills_defaults(tmp_path):
    exp = config.load(write(tmp_path, GOOD))
    assert exp.model.demo == "mlp" and exp.load.users == 8
    assert exp.search.max_batch_size.choices == (1, 8)
    assert exp.search.batch_timeout_micros.zero and exp.search.batch_timeout_micros.log
    assert exp.study.trials == 30


def test_shipped_experiments_are_valid():
    from tests.conftest import ROOT

    files = sorted((ROOT / "experiments").glob("*.toml"))
    assert files
    for f in files:
        config.load(f)


@pytest.mark.parametrize(
    "text, fragment",
    [
        (GOOD + "[load]\nuserz = 3\n", "invalid TOML"),  # a table defined twice
        (GOOD.replace("users = 8", "userz = 8"), "unknown key load.userz"),
        (GOOD.replace("users = 8", 'users = "many"'), "load.users must be an integer"),
        (GOOD.replace("users = 8", "users = 0"), "load.users must be > 0"),
        (GOOD + "[slo]\np99_ms = -1\n", "slo.p99_ms must be > 0"),
        (
            GOOD.replace("max_batch_size = [1, 8]", "max_batch_size = { low = 64, high = 8 }"),
            "low (64) is above high (8)",
        ),
        (
            GOOD.replace(
                "max_batch_size = [1, 8]", "max_batch_size = { low = 0, high = 8, log = true }"
            ),
            "a log scale needs low > 0",
        ),
        (GOOD.replace('demo = "mlp"', 'demo = "gpt"'), "is not a demo model"),
        (GOOD + '[server]\nbackend = "k8s"\n', "server.backend = 'k8s' is not one of"),
        (GOOD.replace("users = 8", 'users = 8\nrequest_sizes = "1:x"'), "load.request_sizes"),
        ("[model]\n", "needs exactly one of demo"),
        ("nonsense = [", "invalid TOML"),
    ],
)
def test_bad_files_give_one_line_naming_the_problem(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        config.load(path)
    msg = str(exc.value)
    assert fragment in msg
    assert str(path) in msg
    assert "\n" not in msg.split("(")[0]


def test_overrides(tmp_path):
    exp = config.load(
        write(tmp_path, GOOD), ["load.users=32", "slo.p99_ms=20", "load.protocol=rest"]
    )
    assert exp.load.users == 32 and exp.slo.p99_ms == 20 and exp.load.protocol == "rest"
    with pytest.raises(ConfigError, match="section.key=value"):
        config.load(write(tmp_path, GOOD), ["users=3"])


def test_round_trip_through_toml(tmp_path):
    exp = config.load(write(tmp_path, GOOD))
    again = config.load(write(tmp_path, config.to_toml(exp)))
    assert again.model == exp.model and again.load == exp.load and again.search == exp.search


def test_cpu_lists():
    import os

    from harness.cpus import default_cpus, parse_cpus

    assert parse_cpus("") is None
    first = min(os.sched_getaffinity(0))
    assert parse_cpus(str(first)) == (first,)
    with pytest.raises(ConfigError, match="is not like 0 or 0-3"):
        parse_cpus("zero")
    with pytest.raises(ConfigError, match="which this machine does not give us"):
        parse_cpus("4096")
    server, load = default_cpus(None, None)
    if len(os.sched_getaffinity(0)) >= 2:
        assert server == (first,) and first not in load
