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


def test_size_mix():
    from harness.config import parse_size_mix

    assert parse_size_mix("8") == [(8, 1.0)]
    assert parse_size_mix("1:50, 4:30,16:20") == [(1, 0.5), (4, 0.3), (16, 0.2)]
    for bad in ("", "a:1", "0:5", "2:-1"):
        with pytest.raises(ConfigError):
            parse_size_mix(bad)


# -- one settings type per concept ----------------------------------------------------------------


def test_enums_come_from_files_and_overrides_as_plain_strings(tmp_path):
    from harness.config import Arrivals, BackendKind, Protocol

    exp = config.load(
        write(tmp_path, GOOD), ["load.protocol=rest", "load.arrivals=constant", "load.rate=5"]
    )
    assert exp.load.protocol is Protocol.REST and exp.load.arrivals is Arrivals.CONSTANT
    assert exp.server.backend is BackendKind.PROCESS
    assert exp.load.protocol == "rest"  # a StrEnum: still the string every caller compares
    assert 'protocol = "rest"' in config.to_toml(exp)
    with pytest.raises(ConfigError, match=r"load.protocol = 'soap' is not one of grpc, rest"):
        config.load(write(tmp_path, GOOD), ["load.protocol=soap"])
    with pytest.raises(ConfigError, match=r"load.arrivals = 'bursty' is not one of poisson, const"):
        config.load(write(tmp_path, GOOD), ["load.arrivals=bursty"])
    with pytest.raises(ConfigError, match="load.protocol must be a string"):
        config.load(write(tmp_path, GOOD), ["load.protocol=3"])


def test_load_settings_have_one_set_of_defaults_and_one_validator():
    from harness.config import LoadConfig

    load = LoadConfig()
    assert (load.users, load.warmup_s, load.window_s, load.max_windows) == (64, 3.0, 3.0, 5)
    assert (load.tolerance, load.request_timeout_s) == (0.10, 30.0)
    assert config.Experiment().load == load
    assert load.check() is load
    assert not load.distributed and load.workers == 1
    assert LoadConfig(processes=2, remote_workers=1).workers == 3
    for bad, fragment in [
        (dict(users=0), "load settings: load.users must be > 0, got 0"),
        (dict(window_s=0), "load.window_s must be > 0"),
        (dict(warmup_s=-1), "load.warmup_s must be >= 0"),
        (dict(rate=-1), "load.rate must be >= 0"),
        (dict(min_windows=4, max_windows=3), "1 <= load.min_windows <= load.max_windows"),
        (dict(protocol="soap"), "load.protocol = 'soap' is not one of grpc, rest"),
        (dict(request_sizes="1:x"), "load.request_sizes"),
        (dict(tolerance=-0.1), "load.tolerance must be >= 0"),
        (dict(request_timeout_s=0), "load.request_timeout_s must be > 0"),
        (dict(master_port=70000), "load.master_port 70000 is not a port number"),
        (dict(processes=0), "load.processes must be between 1 and 64"),
    ]:
        with pytest.raises(ConfigError) as exc:
            LoadConfig(**bad).check()
        assert fragment in str(exc.value), (bad, str(exc.value))


def test_the_simulators_workload_is_built_from_the_load_settings():
    from harness.config import Arrivals, LoadConfig
    from harness.sim.model import Workload

    load = LoadConfig(users=12, rate=40.0, arrivals="constant", request_sizes="1:50,4:50")
    wl = Workload.from_load(load, window_s=7.0, seed=3)
    assert (wl.users, wl.rate, wl.arrivals, wl.request_sizes) == (12, 40.0, "constant", "1:50,4:50")
    assert wl.arrivals == Arrivals.CONSTANT
    assert (wl.window_s, wl.seed, wl.warmup_s) == (7.0, 3, Workload().warmup_s)  # its own time
    assert Workload.from_load(load, users=3).users == 3
    assert wl.check() is wl
    with pytest.raises(ConfigError, match="workload.arrivals = 'bursty' is not one of"):
        Workload(rate=5, arrivals="bursty").check()
    with pytest.raises(ConfigError, match="workload.window_s must be > 0"):
        Workload(users=1, window_s=0).check()


def test_demo_model_names_match_the_catalog():
    from harness.models.catalog import MODELS

    assert tuple(MODELS) == config.DEMO_MODELS


# -- the experiment resolver ----------------------------------------------------------------------


def test_resolver_finds_bundled_experiments_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bundled = config.BUNDLED_DIR / "open_loop.toml"
    for name in ("open_loop", "open_loop.toml", "experiments/open_loop.toml"):
        assert config.resolve_experiment(name) == bundled
    assert config.load_experiment("default", ["load.users=7"]).load.users == 7


def test_resolver_prefers_an_existing_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = write(tmp_path, GOOD.replace("users = 8", "users = 9"))
    (tmp_path / "default.toml").write_text(GOOD.replace("users = 8", "users = 5"))
    assert config.resolve_experiment(str(mine)) == mine
    assert config.load_experiment("default.toml").load.users == 5  # ./default.toml, not bundled
    assert config.load_experiment(mine).load.users == 9


def test_resolver_refuses_a_missing_file_in_one_line(tmp_path):
    for name in ("no_such_experiment", str(tmp_path / "missing.toml")):
        with pytest.raises(ConfigError) as exc:
            config.resolve_experiment(name)
        msg = str(exc.value)
        assert msg.startswith("no experiment file ") and "\n" not in msg
        assert "default" in msg and "open_loop" in msg  # the bundled names, to pick from
    with pytest.raises(ConfigError, match="is not a file"):
        config.resolve_experiment(tmp_path)
