"""Files and directories written so that a reader never sees half of one: the content goes to a
temporary name beside the target, then one rename puts it in place. An interrupt, a SIGKILL or a
full disk mid-write leaves the previous version whole and no temporary behind (a SIGKILL can
leave a hidden ``.<stem>.<random>.tmp<suffix>``, never read as the target).

``durable`` (the default) also flushes the file and its directory to disk, so the new version
survives a power cut too. Files rewritten every second or so, which a crash of the machine may lose
(the load generator's sample chunks, its worker status) pass ``durable=False``: still atomic for
every reader, without an fsync on the load path.

Each write has its own temporary name, so concurrent writers of one target never clobber each
other's half-written file; the last rename wins. Temporary files are created with the usual
permissions (0666 less the umask), like the target a plain ``open`` would make. Standard library
only.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> Path:
    with replacing(path, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> Path:
    return write_bytes(path, text.encode(), durable=durable)


def write_json(path: str | os.PathLike, obj, *, durable: bool = True) -> Path:
    """Indented JSON with a final newline; values JSON cannot hold are written as ``str()``."""
    return write_text(path, json.dumps(obj, indent=2, default=str) + "\n", durable=durable)


def write_csv(path: str | os.PathLike, rows: list[dict], *, durable: bool = True) -> Path:
    """A header of every key in the order first seen, then one line per row."""
    columns: list[str] = []
    for r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return write_text(path, buf.getvalue(), durable=durable)


@contextlib.contextmanager
def replacing(
    path: str | os.PathLike, *, directory: bool = False, durable: bool = True
) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a name (``np.savez``, a
    SavedModel export); when the block ends without an exception it is renamed over ``path``,
    otherwise removed. With ``directory``, the temporary is an empty directory, and a directory
    already at ``path`` is replaced whole (moved aside, then deleted)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(target, directory)
    try:
        yield tmp
        if durable and not directory:
            _fsync(tmp, os.O_RDONLY)
        if directory and target.exists():
            old = _create_beside(target, directory=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:  # an interrupt mid-write leaves the old version and no temporary
        _remove(tmp)
        raise
    if durable:
        with contextlib.suppress(OSError):  # some file systems cannot sync a directory
            _fsync(target.parent, os.O_RDONLY)


def _create_beside(target: Path, directory: bool) -> Path:
    """A new hidden name in the target's directory, created empty (a file or a directory)."""
    for _ in range(100):
        # the target's suffix kept last: np.savez appends ".npz" to a name without it
        tmp = target.with_name(f".{target.stem}.{os.urandom(4).hex()}.tmp{target.suffix}")
        try:
            if directory:
                os.mkdir(tmp)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
