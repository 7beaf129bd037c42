"""The one atomic-write helper: named writers (np.savez) and directories renamed into place; a
failure leaves the previous version whole and nothing beside it. The kill and full-disk cases
of the text writers are in tests/faults/test_atomic_writes.py."""

import os
import stat

import numpy as np
import pytest

from harness import atomic


def test_a_named_writer_gets_a_hidden_temporary_beside_the_target(tmp_path):
    path = tmp_path / "samples-1.npz"
    with atomic.replacing(path, durable=False) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.exists()
        assert not path.exists()
        np.savez(tmp, x=np.arange(3))
    with np.load(path) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples-1.npz"]
    assert list(tmp_path.glob("samples-*.npz")) == [path]  # a reader's glob never sees the temporary


def test_a_failing_writer_keeps_the_old_file_and_removes_its_temporary(tmp_path):
    path = atomic.write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(ValueError), atomic.replacing(path) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError("writer failed")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_a_directory_is_replaced_whole(tmp_path):
    target = tmp_path / "model" / "1"
    with atomic.replacing(target, directory=True) as tmp:
        (tmp / "saved_model.pb").write_text("v1")
    with atomic.replacing(target, directory=True) as tmp:
        (tmp / "saved_model.pb").write_text("v2")
        (tmp / "variables").mkdir()
    assert (target / "saved_model.pb").read_text() == "v2" and (target / "variables").is_dir()
    assert [p.name for p in target.parent.iterdir()] == ["1"]  # the old one moved aside, deleted
    with pytest.raises(KeyboardInterrupt), atomic.replacing(target, directory=True) as tmp:
        (tmp / "saved_model.pb").write_text("v3")
        raise KeyboardInterrupt
    assert (target / "saved_model.pb").read_text() == "v2"
    assert [p.name for p in target.parent.iterdir()] == ["1"]


def test_files_get_the_permissions_a_plain_open_gives(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = atomic.write_text(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(os.stat(written).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_json_and_csv_are_written_as_the_results_files_have_always_been(tmp_path):
    assert atomic.write_json(tmp_path / "s.json", {"v": 1, "p": tmp_path}).read_text() == (
        f'{{\n  "v": 1,\n  "p": "{tmp_path}"\n}}\n'
    )
    rows = [{"a": 1}, {"a": 2, "b": "x"}]
    assert atomic.write_csv(tmp_path / "t.csv", rows).read_bytes() == b"a,b\r\n1,\r\n2,x\r\n"
