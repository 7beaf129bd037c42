"""A model and each trial's config files copied into a Docker volume, for an engine whose host
cannot see our files (``server.model_transfer = "copy"``, the default for a remote engine)."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path

from harness.errors import ServerError
from harness.servers.docker_common import (
    CONFIG_SUBDIR,
    MODELS_DIR,
    ROLE_LABEL,
    owner_labels,
    sdk,
)


class VolumeShipment:
    """A model copied into a Docker volume, once, and each trial's config files beside it.

    For an engine whose host cannot see our files (a remote engine). The volume is filled through
    the archive API of a helper container that is created from the server's image and never
    started: the engine accepts archives for a stopped container, and into a volume even though
    the container's root file system is read-only. Server containers then mount the volume
    read-only at /models: each model at /models/<name> (where TF Serving images look), the
    config files of trial N at /models/.tfs-harness/N/.
    """

    def __init__(self, client, image_id: str, prefix: str, models: dict[str, Path]):
        docker = sdk()
        self.client = client
        self.volume_name = f"{prefix}-models"
        self.helper = None
        self.trials = 0
        try:
            self.volume = client.volumes.create(name=self.volume_name, labels=owner_labels())
            self.helper = client.containers.create(
                image_id,
                ["true"],  # never run
                name=f"{prefix}-transfer",
                labels={**owner_labels(), ROLE_LABEL: "transfer"},
                mounts=[docker.types.Mount(MODELS_DIR, self.volume_name, type="volume")],
                network_disabled=True,
                read_only=True,
                cap_drop=["ALL"],
            )
            self._put(dict(models))
        except docker.errors.DockerException as exc:
            self.remove()
            raise ServerError(
                f"cannot copy the model {', '.join(map(str, models.values()))} to the Docker "
                f"engine: {exc}",
                hint='or set server.model_transfer = "bind" when the engine\'s host has the same paths',
            ) from None
        except BaseException:
            self.remove()
            raise

    def add_files(self, files: list[Path]) -> str:
        """Copy one trial's files into a fresh directory; its path inside the container."""
        docker = sdk()
        self.trials += 1
        sub = f"{CONFIG_SUBDIR}/{self.trials}"
        try:
            self._put({f"{sub}/{f.name}": f for f in files})
        except docker.errors.DockerException as exc:
            raise ServerError(
                f"cannot copy the trial's config files to the engine: {exc}"
            ) from None
        return f"{MODELS_DIR}/{sub}"

    def _put(self, entries: dict[str, Path]) -> None:
        with tempfile.TemporaryFile() as tmp:  # a model may be large: not held in memory
            write_tar(tmp, entries)
            tmp.seek(0)
            if not self.helper.put_archive(MODELS_DIR, tmp):
                raise ServerError("the Docker engine refused the archive")

    def remove(self) -> None:
        docker = sdk()
        for thing in (self.helper, getattr(self, "volume", None)):
            if thing is None:
                continue
            try:
                thing.remove(force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException:
                pass  # a leftover: the next backend's remove_leftovers takes it
        self.helper = None
        self.volume = None


def write_tar(fileobj, entries: dict[str, Path]) -> None:
    """A tar of files and directory trees (``{name in the archive: local path}``), owned by root
    and readable by all: the server runs without capabilities, so it cannot read around modes."""

    def info(name: str, path: Path) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.mtime = int(path.stat().st_mtime)
        return ti

    made: set[str] = set()
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        for name, path in entries.items():
            path = Path(path)
            parents = [str(p) for p in reversed(Path(name).parents) if str(p) != "."]
            for parent in parents:  # the directories leading to the entry, once each
                if parent not in made:
                    made.add(parent)
                    ti = info(parent, path)
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(ti)
            items = [(name, path)]
            if path.is_dir():
                items += [
                    (f"{name}/{p.relative_to(path).as_posix()}", p) for p in sorted(path.rglob("*"))
                ]
            for arcname, p in items:
                ti = info(arcname, p)
                if p.is_dir():
                    ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(ti)
                else:
                    ti.size, ti.mode = p.stat().st_size, 0o644
                    with open(p, "rb") as f:
                        tar.addfile(ti, f)
