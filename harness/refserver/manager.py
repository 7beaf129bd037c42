"""Which models and versions are loaded: start-up loading, version polling, and lookups.

Mirrors TF Serving's defaults: each model serves its highest version directory (policy "latest
1"), a newer version found while running is loaded first and the old one unloaded after
(availability preserving), and status reports every version seen with its state.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from pathlib import Path

from harness.batching import EffectiveBatching
from harness.errors import ConfigError, ModelError, ServerError
from harness.refserver.model import LoadedModel
from harness.refserver.model_batching import FILE_NAME, queue_options
from harness.refserver.status import ServingError

log = logging.getLogger("harness.refserver")

# ModelVersionStatus.State values (get_model_status.proto).
UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END = 0, 10, 20, 30, 40, 50
STATE_NAME = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str
    base_path: str
    policy: str = "latest"  # "latest", "all" or "specific"
    versions: tuple[int, ...] = (1,)  # latest: (N,); specific: the versions
    labels: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: int
    error_code: str = "OK"
    error_message: str = ""


def find_versions(base: Path) -> list[int]:
    """Numeric subdirectories of a model's base path, highest first."""
    versions = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.name.isdigit() and entry.is_dir():
            versions.append(int(entry.name))
    return sorted(versions, reverse=True)


class ServedModel:
    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.base = Path(config.base_path)
        self.loaded: dict[int, LoadedModel] = {}
        self.status: dict[int, VersionStatus] = {}
        self.latest: LoadedModel | None = None

    def wanted(self, found: list[int]) -> list[int]:
        cfg = self.config
        if cfg.policy == "all":
            return found
        if cfg.policy == "specific":
            return [v for v in found if v in cfg.versions]
        return found[: cfg.versions[0] if cfg.versions else 1]


class ModelManager:
    def __init__(
        self,
        configs: list[ModelConfig],
        *,
        intra_op: int = 0,
        inter_op: int = 0,
        poll_seconds: int = 1,
        batcher=None,
        metrics=None,
        warm_up: bool = True,
        batching: EffectiveBatching | None = None,
        per_model_batching: bool = False,
    ) -> None:
        if not configs:
            raise ConfigError(
                "no model to serve", hint="give --model_base_path or --model_config_file"
            )
        self.models = {c.name: ServedModel(c) for c in configs}
        self.intra_op, self.inter_op = intra_op, inter_op
        self.poll_seconds = poll_seconds
        self.batcher = batcher
        self.metrics = metrics
        self.warm_up = warm_up
        self.batching = batching  # the global file's options (None: batching off)
        self.per_model_batching = per_model_batching and batching is not None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- loading ---------------------------------------------------------------------------------

    def load_initial(self) -> None:
        """Load every model's wanted versions; any failure stops start-up with a clear error."""
        for served in self.models.values():
            base = served.base
            if not base.is_dir():
                raise ServerError(
                    f"Could not find base path {base} for servable {served.config.name}",
                    hint="check --model_base_path (the directory that holds the version directories)",
                )
            found = find_versions(base)
            if not found:
                raise ServerError(
                    f"No versions of servable {served.config.name} found under base path {base}",
                    hint=f"export the model into a numbered directory such as {base}/1",
                )
            wanted = served.wanted(found)
            if not wanted:
                raise ServerError(
                    f"none of the versions {served.config.versions} of servable {served.config.name} "
                    f"exist under {base}; found {sorted(found)}"
                )
            for version in wanted:
                try:
                    self._load(served, version)
                except ModelError as exc:
                    raise ServerError(
                        exc.message, hint=exc.hint or "check the SavedModel directory"
                    ) from None

    def _load(self, served: ServedModel, version: int) -> None:
        name = served.config.name
        served.status[version] = VersionStatus(version, LOADING)
        self._gauge(name, version, LOADING)
        path = served.base / str(version)
        t0 = time.monotonic()
        try:
            options = self._queue_options(path)
            model = LoadedModel(path, version, intra_op=self.intra_op, inter_op=self.inter_op)
            model.batching = options
            if self.warm_up:
                model.warm_up()
        except ServingError as exc:
            served.status[version] = VersionStatus(
                version, END, exc.code, f"warm-up failed: {exc.message}"
            )
            self._gauge(name, version, END)
            raise ModelError(f"warm-up of {path} failed: {exc.message}") from None
        except ModelError as exc:
            served.status[version] = VersionStatus(version, END, "UNKNOWN", str(exc))
            self._gauge(name, version, END)
            raise
        if self.metrics is not None:
            self.metrics.load_latency.observe((time.monotonic() - t0) * 1e6, str(path))
        settle_heap()
        with self._lock:
            served.loaded[version] = model
            served.status[version] = VersionStatus(version, AVAILABLE)
            served.latest = served.loaded[max(served.loaded)]
        self._gauge(name, version, AVAILABLE)
        log.info("Successfully loaded servable version {name: %s version: %d}", name, version)

    def _queue_options(self, path: Path):
        """The version's queue options (None: unbatched); ModelError where TF Serving's load fails."""
        if self.batching is None:
            return None
        options = queue_options(path, self.batching, self.per_model_batching)
        if self.per_model_batching:
            log.info(
                "Batching for %s: %s",
                path,
                f"{path / FILE_NAME}: {options}" if options else f"no {FILE_NAME}: unbatched",
            )
        return options

    def _unload(self, served: ServedModel, version: int) -> None:
        name = served.config.name
        with self._lock:
            model = served.loaded.pop(version, None)
            served.status[version] = VersionStatus(version, UNLOADING)
            served.latest = served.loaded[max(served.loaded)] if served.loaded else None
        self._gauge(name, version, UNLOADING)
        if self.batcher is not None:
            self.batcher.retire((name, version))
        if model is not None:
            model.close()
            del model
            settle_heap(release=True)
        served.status[version] = VersionStatus(version, END)
        self._gauge(name, version, END)
        log.info("Unloaded servable version {name: %s version: %d}", name, version)

    def _gauge(self, name: str, version: int, state: int) -> None:
        if self.metrics is not None:
            self.metrics.model_state.set(state, name, str(version))

    # -- polling ---------------------------------------------------------------------------------

    def start_polling(self) -> None:
        if self.poll_seconds <= 0:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
            except Exception:  # a bad new version must not stop the server
                log.exception("version poll failed")

    def poll_once(self) -> None:
        for served in self.models.values():
            wanted = set(served.wanted(find_versions(served.base)))
            for version in sorted(wanted - set(served.loaded)):
                if served.status.get(version, VersionStatus(version, UNKNOWN)).state == END:
                    continue  # failed or unloaded before: do not retry forever
                try:
                    self._load(served, version)
                except ModelError as exc:
                    log.error(
                        "Loading servable %s version %d failed: %s",
                        served.config.name,
                        version,
                        exc,
                    )
            if not wanted:
                continue  # directory emptied: keep serving what we have, as TF Serving does
            for version in sorted(set(served.loaded) - wanted):
                if len(served.loaded) > 1:
                    self._unload(served, version)

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
        for served in self.models.values():
            for model in served.loaded.values():
                model.close()
            served.loaded.clear()

    # -- lookups ---------------------------------------------------------------------------------

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> LoadedModel:
        served = self.models.get(name)
        if version is None and label is not None:
            labels = dict(served.config.labels) if served else {}
            if label not in labels:
                raise ServingError(
                    "INVALID_ARGUMENT" if served else "NOT_FOUND",
                    f"Unrecognized servable version label: {label}"
                    if served
                    else f"Servable not found for request: Label({name}, {label})",
                )
            version = labels[label]
        if served is not None:
            if version is None:
                model = served.latest
            else:
                model = served.loaded.get(version)
            if model is not None:
                return model
        what = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise ServingError("NOT_FOUND", f"Servable not found for request: {what}")

    def statuses(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        served = self.models.get(name)
        if served is None:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
        if label is not None:
            labels = dict(served.config.labels)
            if label not in labels:
                raise ServingError(
                    "INVALID_ARGUMENT", f"Unrecognized servable version label: {label}"
                )
            version = labels[label]
        if version is not None:
            st = served.status.get(version)
            if st is None:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
            return [st]
        return sorted(served.status.values(), key=lambda s: -s.version)


def settle_heap(release: bool = False) -> None:
    """Move everything alive after a model load out of the garbage collector's sight.

    A loaded TensorFlow model leaves hundreds of thousands of Python objects; every full
    collection walks them all with the GIL held, a pause of ~0.2 s here every few thousand
    requests, which is what decided closed-loop p99 (it flipped between ~75 and ~220 ms for one
    config). Frozen objects are never walked again. On unload (``release``) they are thawed and
    collected once, so an old version's cycles are not kept for ever.
    """
    if release:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
