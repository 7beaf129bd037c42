"""Building images: the CPU-optimised TF Serving image, the way TF Serving's docs describe it.

Two stages from a checkout of tensorflow/serving: the devel image compiles the server with the
given compiler options (``TF_SERVING_BUILD_OPTIONS``), then the slim image copies the binary out
of it (``TF_SERVING_BUILD_IMAGE``). The commands run through the ``docker`` CLI, without a shell.
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import subprocess
from pathlib import Path

from harness.errors import ConfigError, ServerError

DEVEL_DOCKERFILE = "tensorflow_serving/tools/docker/Dockerfile.devel"
SERVING_DOCKERFILE = "tensorflow_serving/tools/docker/Dockerfile"
DEFAULT_BUILD_OPTIONS = "--copt=-mavx2 --copt=-mfma"


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizedBuild:
    source: Path  # a checkout of the tensorflow/serving repository
    tag: str = "tfs-harness/serving-optimized:latest"
    devel_tag: str = "tfs-harness/serving-optimized-devel:latest"
    build_options: str = DEFAULT_BUILD_OPTIONS  # e.g. "--config=nativeopt"

    def commands(self) -> list[list[str]]:
        src = str(self.source)
        return [
            [
                "docker",
                "build",
                "--pull",
                "-t",
                self.devel_tag,
                "--build-arg",
                f"TF_SERVING_BUILD_OPTIONS={self.build_options}",
                "-f",
                f"{src}/{DEVEL_DOCKERFILE}",
                src,
            ],
            [
                "docker",
                "build",
                "-t",
                self.tag,
                "--build-arg",
                f"TF_SERVING_BUILD_IMAGE={self.devel_tag}",
                "-f",
                f"{src}/{SERVING_DOCKERFILE}",
                src,
            ],
        ]

    def check(self) -> None:
        for rel in (DEVEL_DOCKERFILE, SERVING_DOCKERFILE):
            if not (self.source / rel).is_file():
                raise ConfigError(
                    f"{self.source} is not a tensorflow/serving checkout: {rel} is missing",
                    hint="clone the tensorflow/serving repository and pass its directory as --source",
                )
        if not self.build_options.strip():
            raise ConfigError(
                "build options are empty", hint=f"for example {DEFAULT_BUILD_OPTIONS!r}"
            )


def format_commands(commands: list[list[str]]) -> str:
    return "\n".join(shlex.join(c) for c in commands)


def build_optimized(build: OptimizedBuild, *, dry_run: bool = False) -> str:
    """Print (dry run) or run the two docker builds; returns the command text."""
    text = format_commands(build.commands())
    if dry_run:
        return text
    build.check()
    if shutil.which("docker") is None:
        raise ServerError("the docker CLI is not installed", hint="install docker.io")
    for cmd in build.commands():
        result = subprocess.run(cmd)
        if result.returncode != 0:
            raise ServerError(
                f"'{shlex.join(cmd[:4])} ...' failed with exit code {result.returncode}"
            )
    return text
