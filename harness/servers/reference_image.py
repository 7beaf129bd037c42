"""The test image: the reference server built to the ``tensorflow/serving`` image contract.

What a stock image guarantees, and all the Docker backend relies on: an entrypoint script that
runs ``tensorflow_model_server --port=8500 --rest_api_port=8501 --model_name=${MODEL_NAME}
--model_base_path=${MODEL_BASE_PATH}/${MODEL_NAME}`` followed by the container's arguments
(``MODEL_NAME=model``, ``MODEL_BASE_PATH=/models`` by default), the two ports, the model under
``/models/<name>``. This image keeps that contract and is self-contained, so it runs wherever a
stock image would (a user's compose file included: nothing is mounted from this machine):

- ``/usr/bin/tf_serving_entrypoint.sh``, a bash script with the stock one's behaviour (it does
  not ``exec``: bash stays PID 1, as in the stock image);
- ``/usr/bin/tensorflow_model_server``, which runs ``harness.servers.tfs_binary`` (TF Serving's
  flags only) on the native request path;
- the native server and its shared-library closure, TensorFlow's two C libraries, and what the
  Python launcher imports (this interpreter and its standard library, numpy, protobuf, psutil,
  the harness package), all at fixed places.

It is built from files on this machine: no registry, no base image. The root file system is
assembled into a tar and imported (``docker import``). Its content hash (every file's SHA-256;
for files a wheel installed, the hash its RECORD lists) is kept in a label, so an unchanged
image is not built twice.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path

from harness.errors import ServerError
from harness.servers.docker_common import GRPC_PORT, MODELS_DIR, REFERENCE_IMAGE, REST_PORT, sdk

CONTENT_LABEL = "org.tfs-harness.content-sha256"
ROOT = "/opt/tfs-harness"
PY_DIR = f"{ROOT}/python"  # the packages the launcher imports
NATIVE_BIN = f"{ROOT}/bin/harness-refserver-native"
ENTRYPOINT = "/usr/bin/tf_serving_entrypoint.sh"
TF_LIBS = ("libtensorflow_cc.so.2", "libtensorflow_framework.so.2")
DISTS = ("numpy", "protobuf", "psutil")  # third-party packages the launcher imports
# Parts of the standard library no server start touches (tests, GUIs, build files).
STDLIB_SKIP = {
    "site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo",
    "ensurepip", "lib2to3", "pydoc_data",
}  # fmt: skip
DYNLOAD_SKIP = ("_test", "_tkinter", "_ctypes_test", "_xx", "xxlimited")

ENTRYPOINT_TEXT = f"""#!/bin/bash
# Starts the model server the way tensorflow/serving images do: gRPC on {GRPC_PORT}, REST on {REST_PORT},
# the model named by MODEL_NAME under MODEL_BASE_PATH, then the container's own arguments.
tensorflow_model_server --port={GRPC_PORT} --rest_api_port={REST_PORT} \\
  --model_name=${{MODEL_NAME}} --model_base_path=${{MODEL_BASE_PATH}}/${{MODEL_NAME}} "$@"
"""

MODEL_SERVER_TEXT = """#!/bin/bash
# tensorflow_model_server in the tfs-harness test image: the reference server
# (harness/servers/tfs_binary.py) on its native request path, with the Python this image carries.
export PYTHONPATH={py_dir} PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1
export HARNESS_REFSERVER_IMPL=native HARNESS_REFSERVER_NATIVE_BIN={native}
exec {python} -m harness.servers.tfs_binary "$@"
"""

TF_STUB_TEXT = '''"""Only TensorFlow's C libraries are in this image (the native server opens them)."""

raise ImportError("this image carries TensorFlow's C libraries only, not its Python package")
'''


@dataclasses.dataclass(frozen=True)
class Built:
    tag: str
    image_id: str
    size_bytes: int
    seconds: float  # wall time of this call (planning, hashing and, unless cached, the import)
    cached: bool  # an image with the same content hash was already tagged


@dataclasses.dataclass(frozen=True)
class _Entry:
    kind: str  # "file" (from this machine), "data" (written here), "dir" or "link"
    source: str = ""  # file: the host path
    data: bytes = b""  # data: the content
    target: str = ""  # link: where it points
    mode: int = 0o755
    digest: str = ""  # file: its SHA-256 when a wheel's RECORD already says it


class Rootfs:
    """A root file system to be: image paths (absolute) mapped to what goes there."""

    def __init__(self) -> None:
        self.entries: dict[str, _Entry] = {}

    def add_dir(self, path: str, mode: int = 0o755) -> None:
        self.entries.setdefault(path, _Entry("dir", mode=mode))

    def add_data(self, path: str, text: str, mode: int = 0o755) -> None:
        self.entries[path] = _Entry("data", data=text.encode(), mode=mode)

    def add_file(self, path: str, source: str | Path, digest: str = "") -> None:
        mode = stat.S_IMODE(os.stat(source).st_mode) | 0o444
        self.entries[path] = _Entry("file", source=str(source), mode=mode, digest=digest)

    def add_host(self, path: str) -> None:
        """A path of this machine at the same place, with every symlink that leads to it."""
        parts = Path(os.path.normpath(path)).parts[1:]
        cur = "/"
        for i, part in enumerate(parts):
            nxt = os.path.join(cur, part)
            if os.path.islink(nxt):
                if nxt not in self.entries:
                    target = os.readlink(nxt)
                    self.entries[nxt] = _Entry("link", target=target)
                    self.add_host(os.path.normpath(os.path.join(cur, target)))  # a chain of links
                nxt = os.path.realpath(nxt)
            elif i < len(parts) - 1:
                self.add_dir(nxt)
            cur = nxt
        if os.path.isdir(cur):
            self.add_dir(cur)
        elif cur not in self.entries:
            self.add_file(cur, cur)

    def digest(self) -> str:
        """SHA-256 over every path, kind, mode and content."""
        h = hashlib.sha256()
        for path in sorted(self.entries):
            e = self.entries[path]
            content = e.target or (_file_digest(e.source, e.digest) if e.kind == "file" else "")
            if e.kind == "data":
                content = hashlib.sha256(e.data).hexdigest()
            h.update(f"{path}\0{e.kind}\0{e.mode:o}\0{content}\n".encode())
        return h.hexdigest()

    def write(self, fileobj) -> None:
        """The tar ``docker import`` reads: owned by root, parents before children."""
        for path in list(self.entries):  # every parent directory has an entry
            for parent in Path(path).parents:
                if str(parent) != "/":
                    self.add_dir(str(parent))
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                tar_add(tar, path.lstrip("/"), self.entries[path])


def tar_add(tar: tarfile.TarFile, name: str, e: _Entry) -> None:
    ti = tarfile.TarInfo(name)
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    ti.mode = e.mode
    if e.kind == "dir":
        ti.type = tarfile.DIRTYPE
        tar.addfile(ti)
    elif e.kind == "link":
        ti.type, ti.linkname = tarfile.SYMTYPE, e.target
        tar.addfile(ti)
    elif e.kind == "data":
        ti.size = len(e.data)
        tar.addfile(ti, io.BytesIO(e.data))
    else:
        st = os.stat(e.source)
        ti.size, ti.mtime = st.st_size, int(st.st_mtime)  # pyc files check their source's mtime
        with open(e.source, "rb") as f:
            tar.addfile(ti, f)


_DIGESTS: dict[tuple, str] = {}


def _file_digest(path: str, recorded: str) -> str:
    """A file's SHA-256: the wheel's RECORD entry when given, else read (once per process)."""
    if recorded:
        return recorded
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as f:
            _DIGESTS[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _DIGESTS[key]


# -- what goes in ---------------------------------------------------------------------------------


def shared_libraries(paths: list[str]) -> tuple[set[str], set[str]]:
    """(the libraries these ELF files load, the files among them with an unresolved one), as
    ``ldd`` reports them (what the dynamic loader of this machine would resolve)."""
    libs: set[str] = set()
    broken: set[str] = set()
    ldd = shutil.which("ldd")
    if ldd is None:
        raise ServerError("ldd is not installed", hint="install libc-bin")
    args = [*paths, paths[0]] if len(paths) == 1 else paths  # two names: ldd prints headers
    out = subprocess.run([ldd, *args], capture_output=True, text=True).stdout
    current = ""
    for line in out.splitlines():
        if not line.startswith("\t"):
            current = line.rstrip(":")
            continue
        left, _, right = line.strip().partition(" => ")
        if right.startswith("not found"):
            broken.add(current)
        elif right:
            libs.add(right.split(" (")[0])
        elif left.startswith("/"):
            libs.add(left.split(" (")[0])  # the loader itself
    return libs, broken


def _skip_stdlib(rel: Path) -> bool:
    top = rel.parts[0]
    if top in STDLIB_SKIP or top.startswith("config-"):
        return True
    if rel.name.endswith((".opt-1.pyc", ".opt-2.pyc")) or "tests" in rel.parts:
        return True
    return top == "lib-dynload" and rel.name.startswith(DYNLOAD_SKIP)


def add_python(fs: Rootfs) -> tuple[str, list[str]]:
    """This interpreter and its standard library at their own paths; (interpreter, extensions)."""
    python = os.path.realpath(sys.executable)
    fs.add_host(python)
    stdlib = Path(os.path.realpath(sysconfig.get_paths()["stdlib"]))
    extensions = []
    for path in sorted(stdlib.rglob("*")):
        rel = path.relative_to(stdlib)
        if path.is_dir() or _skip_stdlib(rel):
            continue
        fs.add_host(str(path))
        if path.suffix == ".so":
            extensions.append(str(path))
    return python, extensions


def add_dist(fs: Rootfs, name: str, only: tuple[str, ...] = ()) -> list[str]:
    """An installed distribution's files (``only``: these file names, plus its METADATA) under
    PY_DIR, with the hashes its RECORD lists; returns its extension modules."""
    dist = metadata.distribution(name)
    extensions = []
    for f in dist.files or []:
        rel = str(f)
        if rel.startswith("..") or "/tests/" in rel or rel.endswith(".opt-1.pyc"):
            continue
        if only and f.name not in only and f.name != "METADATA":
            continue
        path = Path(dist.locate_file(f))
        if not path.is_file():
            continue
        recorded = ""
        if f.hash is not None and f.hash.mode == "sha256" and f.size == path.stat().st_size:
            recorded = base64.urlsafe_b64decode(f.hash.value + "==").hex()
        fs.add_file(f"{PY_DIR}/{rel}", path, recorded)
        if ".so" in path.suffixes:
            extensions.append(str(path))
    return extensions


def add_harness(fs: Rootfs) -> None:
    """The harness package this process runs (its sources and compiled modules)."""
    import harness

    pkg = Path(harness.__file__).resolve().parent
    tag = sys.implementation.cache_tag
    for path in sorted(pkg.rglob("*")):
        rel = path.relative_to(pkg.parent)
        if "build" in rel.parts or not path.is_file():
            continue
        if path.suffix == ".py" or (path.suffix == ".pyc" and f".{tag}." in path.name):
            fs.add_file(f"{PY_DIR}/{rel}", path)


def plan(native: str) -> Rootfs:
    """The image's root file system (``native``: the built native server)."""
    fs = Rootfs()
    for top in ("bin", "lib", "lib64", "sbin"):  # a merged /usr, as on this machine
        if os.path.islink(f"/{top}"):
            fs.add_host(f"/{top}")
    python, extensions = add_python(fs)
    for dist in DISTS:
        extensions += add_dist(fs, dist)
    add_dist(fs, "tensorflow", only=TF_LIBS)
    add_dist(fs, "tfs-harness", only=("METADATA",))
    add_harness(fs)
    fs.add_data(f"{PY_DIR}/tensorflow/__init__.py", TF_STUB_TEXT, 0o644)
    fs.add_file(NATIVE_BIN, native)
    bash = os.path.realpath(shutil.which("bash") or "/bin/bash")
    fs.add_host(bash)
    tf_dir = Path(metadata.distribution("tensorflow").locate_file("tensorflow"))
    roots = [native, python, bash, *(str(tf_dir / lib) for lib in TF_LIBS)]
    libs, broken = shared_libraries(roots + extensions)
    if broken & set(roots):
        raise ServerError(f"unresolved shared libraries in {sorted(broken & set(roots))}")
    for ext in broken:  # an extension module this machine cannot load: nothing imports it
        fs.entries.pop(ext, None)
        fs.entries.pop(f"{PY_DIR}/{ext.split('site-packages/', 1)[-1]}", None)
    for lib in sorted(libs):
        if not lib.startswith(str(tf_dir)):  # TensorFlow's own two go under PY_DIR
            fs.add_host(lib)
    if os.path.exists("/etc/ld.so.cache"):
        fs.add_host("/etc/ld.so.cache")
    fs.add_data(ENTRYPOINT, ENTRYPOINT_TEXT)
    fs.add_data(
        "/usr/bin/tensorflow_model_server",
        MODEL_SERVER_TEXT.format(py_dir=PY_DIR, native=NATIVE_BIN, python=python),
    )
    fs.add_dir(MODELS_DIR)
    fs.add_dir("/tmp", 0o1777)
    return fs


def image_config() -> list[str]:
    """The image's configuration, as the stock Dockerfile sets it."""
    return [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"ENV MODEL_BASE_PATH={MODELS_DIR}",
        "ENV MODEL_NAME=model",
        f"EXPOSE {GRPC_PORT} {REST_PORT}",
        f'ENTRYPOINT ["{ENTRYPOINT}"]',
    ]


def native_binary() -> str:
    from harness.refserver.native import launch

    path = launch.binary()
    if path is None:
        raise ServerError(
            f"the test image runs the native request path, and {launch.BINARY_NAME} is not built",
            hint="run bash scripts/build-native.sh (scripts/bootstrap.sh does)",
        )
    return str(path)


# -- the build ------------------------------------------------------------------------------------


def build_reference_image(client=None, tag: str = REFERENCE_IMAGE) -> Built:
    """Build (or find, by content hash) the test image under ``tag``."""
    from harness.servers.docker import connect

    t0 = time.monotonic()
    client = client or connect()
    fs = plan(native_binary())
    config = image_config()
    digest = hashlib.sha256((fs.digest() + "\n".join(config)).encode()).hexdigest()
    old = _tagged(client, tag)
    if old is not None and (old.labels or {}).get(CONTENT_LABEL) == digest:
        return Built(tag, old.id, old.attrs.get("Size", 0), time.monotonic() - t0, True)
    _import(client, fs, tag, [*config, f"LABEL {CONTENT_LABEL}={digest}"])
    image = client.images.get(tag)
    if old is not None and old.id != image.id and CONTENT_LABEL in (old.labels or {}):
        _remove_quietly(client, old.id)  # our previous build, now untagged
    return Built(tag, image.id, image.attrs.get("Size", 0), time.monotonic() - t0, False)


def _tagged(client, tag: str):
    docker = sdk()
    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def _import(client, fs: Rootfs, tag: str, changes: list[str]) -> None:
    docker = sdk()
    repo, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    api = client.api
    timeout, api.timeout = api.timeout, max(api.timeout or 0, 900)  # a large image imports slowly
    try:
        with tempfile.NamedTemporaryFile(prefix="tfs-harness-image-", suffix=".tar") as tmp:
            fs.write(tmp)
            tmp.flush()
            api.import_image_from_file(tmp.name, repository=repo, tag=version, changes=changes)
    except docker.errors.DockerException as exc:
        raise ServerError(f"cannot build {tag}: {exc}") from None
    except OSError as exc:
        raise ServerError(
            f"cannot build {tag}: {exc}", hint="the image's tar is written to the temp directory"
        ) from None
    finally:
        api.timeout = timeout


def _remove_quietly(client, image_id: str) -> None:
    docker = sdk()
    try:
        client.images.remove(image_id)
    except docker.errors.DockerException:
        pass  # still used by a container: the engine keeps it
