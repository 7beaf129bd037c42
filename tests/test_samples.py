"""Per-request samples on disk: chunk files written by the load processes, read back as columns."""

from collections import Counter

import numpy as np

from harness.samples import COLUMNS, DTYPES, Samples, write_chunk


def columns(t, latency_us=100.0, code=0, size=1):
    n = len(t)
    return {
        "t_intended": np.asarray(t, np.float64),
        "latency_us": np.full(n, latency_us),
        "code": np.full(n, code, np.int16),
        "size": np.full(n, size, np.int32),
        "late_us": np.zeros(n, np.float32),
    }


def test_chunks_are_merged_in_send_order_with_their_oversize_counts(tmp_path):
    # two processes' chunks, interleaved in time, written in either order
    write_chunk(tmp_path, "b-000001", columns([2.0, 4.0], code=3, size=40), [[40, 32, 2]])
    write_chunk(tmp_path, "a-000001", columns([1.0, 3.0, 5.0]), [])
    write_chunk(tmp_path, "a-000002", columns([6.0], size=40), [[40, 32, 1], [64, 32, 1]])
    s = Samples.read(tmp_path)
    assert len(s) == 6
    assert list(s["t_intended"]) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert list(s["code"]) == [0, 3, 0, 3, 0, 0] and list(s["size"]) == [1, 40, 1, 40, 1, 40]
    assert s.oversize == Counter({(40, 32): 3, (64, 32): 1})
    assert [s[c].dtype for c in COLUMNS] == [np.dtype(d) for d in DTYPES]


def test_between_keeps_the_requests_due_in_the_window(tmp_path):
    write_chunk(tmp_path, "x", columns(np.arange(10.0)), [[8, 4, 1]])
    s = Samples.read(tmp_path)
    w = s.between(2.0, 5.0)
    assert list(w["t_intended"]) == [2.0, 3.0, 4.0]  # [t0, t1): the edge goes to the next window
    assert len(w) == 3 and w.oversize == s.oversize


def test_an_empty_folder_reads_as_no_samples_and_a_temporary_is_never_read(tmp_path):
    s = Samples.read(tmp_path)
    assert len(s) == 0 and s.oversize == Counter()
    assert [s[c].dtype for c in COLUMNS] == [np.dtype(d) for d in DTYPES]
    # what a load process killed mid-write leaves: a hidden temporary beside the chunks
    (tmp_path / ".samples-x.1a2b3c4d.tmp.npz").write_bytes(b"half a file")
    write_chunk(tmp_path, "y", columns([1.0]), [])
    assert len(Samples.read(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "samples-y.npz"
    ]
