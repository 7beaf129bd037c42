"""Several models in one server, at the file level: the --model_config_file each backend writes,
each model staged with its batching_params.pbtxt for per-model batching (the user's model
directory untouched), and the command line checked against TF Serving's flags."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from harness import tfs_flags, tfs_formats
from harness.batching import BatchingParameters
from harness.servers.base import ServerSpec
from harness.servers.process import model_flags
from harness.servers.staging import PER_MODEL_FILE, ServedModel, stage


def _tree(path: Path) -> dict[str, float]:
    return {str(p.relative_to(path)): p.stat().st_mtime for p in sorted(path.rglob("*"))}


@pytest.fixture
def two(mlp_base, tmp_path):
    """Two served models from the exported mlp (a second base path linked to the same versions)."""
    other = tmp_path / "user" / "ranker"
    other.mkdir(parents=True)
    (other / "1").symlink_to(mlp_base / "1", target_is_directory=True)
    return mlp_base, other


SHARED = BatchingParameters(num_batch_threads=2, thread_pool_name="batch_threads")
OWN = {
    "mlp": BatchingParameters(max_batch_size=8, batch_timeout_micros=500, max_enqueued_batches=4),
    "ranker": BatchingParameters(max_batch_size=32, batch_timeout_micros=0, max_enqueued_batches=16),
}


def test_shared_batching_lists_both_models_where_they_are(two, tmp_path):
    mlp, ranker = two
    spec = ServerSpec(
        model_name="mlp", model_dir=mlp, batching=BatchingParameters(max_batch_size=8),
        models=(ServedModel(name="mlp", base_path=mlp), ServedModel(name="ranker", base_path=ranker)),
    )  # fmt: skip
    flags = model_flags(spec, tmp_path / "w", mlp)
    assert flags == [f"--model_config_file={tmp_path / 'w' / 'models.config'}"]
    msg = tfs_formats.read(tmp_path / "w" / "models.config", tfs_formats.ModelServerConfig)
    got = [(c.name, c.base_path, c.model_platform) for c in msg.model_config_list.config]
    assert got == [("mlp", str(mlp.resolve()), "tensorflow"), ("ranker", str(ranker.resolve()), "tensorflow")]
    assert "--enable_per_model_batching_parameters" not in spec.server_flags("b.txt", "m.txt")
    assert not (tmp_path / "w" / "models").exists()  # nothing staged without per-model files


def test_per_model_batching_stages_each_model_and_leaves_the_users_alone(two, tmp_path):
    mlp, ranker = two
    before = _tree(mlp)
    spec = ServerSpec(
        model_name="mlp", model_dir=mlp, batching=SHARED,
        models=tuple(ServedModel(name=n, base_path=p, batching=OWN[n]) for n, p in (("mlp", mlp), ("ranker", ranker))),
    )  # fmt: skip
    work = tmp_path / "w"
    flags = model_flags(spec, work, mlp)
    msg = tfs_formats.read(work / "models.config", tfs_formats.ModelServerConfig)
    for config in msg.model_config_list.config:
        staged = Path(config.base_path)
        assert staged == work / "models" / config.name  # the trial's folder, not the user's
        version = staged / "1"
        assert BatchingParameters.read(version / PER_MODEL_FILE) == OWN[config.name]
        assert (version / "saved_model.pb").resolve() == (mlp / "1" / "saved_model.pb").resolve()
        assert (version / "variables").is_dir()
    assert _tree(mlp) == before and not (mlp / "1" / PER_MODEL_FILE).exists()
    # the global file keeps the shared pool only, and the flag turns the per-model files on
    batching_file = SHARED.write(work / "batching_parameters.txt")
    text = batching_file.read_text()
    assert text == 'num_batch_threads { value: 2 }\nthread_pool_name { value: "batch_threads" }\n'
    args = flags + spec.server_flags(str(batching_file), "m.txt")
    assert "--enable_per_model_batching_parameters" in args and "--enable_batching" in args
    assert tfs_flags.unknown(args) == []  # every flag one tensorflow_model_server defines


def test_a_users_own_batching_params_file_is_replaced_in_the_staged_copy(mlp_base, tmp_path):
    user = tmp_path / "user" / "m"
    (user / "3").mkdir(parents=True)
    for entry in (mlp_base / "1").iterdir():
        (user / "3" / entry.name).symlink_to(entry)
    (user / "3" / PER_MODEL_FILE).write_text("max_batch_size { value: 1 }\n")
    staged = stage(ServedModel(name="m", base_path=user, batching=OWN["mlp"]), tmp_path / "s")
    assert BatchingParameters.read(staged.base_path / "3" / PER_MODEL_FILE) == OWN["mlp"]
    assert (user / "3" / PER_MODEL_FILE).read_text() == "max_batch_size { value: 1 }\n"


def test_docker_stand_ins_are_mounted_over_with_the_users_files(two, tmp_path):
    """The Docker backend stages empty stand-ins (links mean nothing inside a container) and
    mounts the user's files over them, read-only; the model config names container paths."""
    pytest.importorskip("docker")
    from harness.servers.docker import DockerBackend

    mlp, ranker = two
    backend = object.__new__(DockerBackend)  # no engine needed to plan the mounts
    backend.transfer = "bind"
    spec = ServerSpec(
        model_name="mlp", model_dir=mlp, batching=SHARED,
        models=(ServedModel(name="mlp", base_path=mlp, batching=OWN["mlp"]), ServedModel(name="ranker", base_path=ranker)),
    )  # fmt: skip
    staged = backend._stage(spec, tmp_path / "w")
    assert (staged[0].base_path / "1" / "saved_model.pb").stat().st_size == 0  # a stand-in
    assert not (staged[0].base_path / "1" / "saved_model.pb").is_symlink()
    mounts, config_dir = backend._mounts(None, {m.name: m.base_path for m in staged}, tmp_path / "w", [], staged)
    by_target = {m["Target"]: m for m in mounts}
    assert by_target["/models/mlp"]["Source"] == str(tmp_path / "w" / "models" / "mlp")
    assert by_target["/models/ranker"]["Source"] == str(ranker.resolve())
    assert by_target["/models/mlp/1/saved_model.pb"]["Source"] == str((mlp / "1" / "saved_model.pb").resolve())
    assert all(m["ReadOnly"] for m in mounts) and config_dir == "/config"
    backend.transfer = "copy"
    with pytest.raises(Exception, match="per-model batching parameters cannot be copied"):
        backend._stage(spec, tmp_path / "w2")


def test_process_command_line_names_the_config_file(two, tmp_path):
    """server.cmd of a real ProcessBackend start would hold these: parse the flags as a shell."""
    mlp, ranker = two
    spec = ServerSpec(model_name="mlp", model_dir=mlp, models=(ServedModel(name="mlp", base_path=mlp), ServedModel(name="ranker", base_path=ranker)))  # fmt: skip
    line = shlex.join(model_flags(spec, tmp_path / "w", mlp) + spec.server_flags(None, "m.txt"))
    args = shlex.split(line)
    assert not any(a.startswith(("--model_name", "--model_base_path")) for a in args)
    assert tfs_flags.unknown(args) == []
