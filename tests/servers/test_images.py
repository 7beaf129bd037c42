import pytest

from harness.errors import ConfigError
from harness.servers.images import OptimizedBuild, build_optimized


def test_dry_run_prints_the_two_stage_build(tmp_path):
    text = build_optimized(
        OptimizedBuild(source=tmp_path, build_options="--config=nativeopt"), dry_run=True
    )
    devel, slim = text.splitlines()
    assert devel.startswith("docker build --pull -t tfs-harness/serving-optimized-devel:latest")
    assert "--build-arg TF_SERVING_BUILD_OPTIONS=--config=nativeopt " in devel
    default = build_optimized(OptimizedBuild(source=tmp_path), dry_run=True)
    assert "'TF_SERVING_BUILD_OPTIONS=--copt=-mavx2 --copt=-mfma'" in default
    assert f"-f {tmp_path}/tensorflow_serving/tools/docker/Dockerfile.devel {tmp_path}" in devel
    assert "TF_SERVING_BUILD_IMAGE=tfs-harness/serving-optimized-devel:latest" in slim
    assert f"-f {tmp_path}/tensorflow_serving/tools/docker/Dockerfile {tmp_path}" in slim


def test_real_build_refuses_a_directory_that_is_not_a_checkout(tmp_path):
    with pytest.raises(ConfigError, match="is not a tensorflow/serving checkout"):
        build_optimized(OptimizedBuild(source=tmp_path))
