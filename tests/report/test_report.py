"""Reports from real studies: tables checked against the raw files, every plot a real image,
the HTML rendered by headless Chromium, and the report drawn without TensorFlow or Optuna."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys

import numpy as np
import pytest

from harness.labels import EXIT_USAGE
from tests.conftest import ROOT
from tests.report.browser import render

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def studies(report_studies):
    """The session's gRPC and REST studies (tests/studies.py): run once, read here."""
    return report_studies


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_real_png(path):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    img = mpimg.imread(path)
    assert img.shape[0] > 150 and img.shape[1] > 150, f"{path} is tiny: {img.shape}"
    assert float(np.std(img[..., :3])) > 0.02, f"{path} is blank"


def test_tune_draws_the_report_and_its_numbers_match_the_raw_files(studies):
    d = studies["grpc"]
    assert "report: " in studies["tune_stdout"]
    for name in ("report.md", "report.html"):
        assert (d / name).stat().st_size > 1000
    pngs = sorted((d / "plots").glob("*.png"))
    assert {p.stem for p in pngs} >= {
        "throughput_vs_p99", "latency_percentiles", "latency_distribution", "rejections",
        "batch_sizes", "importance", "slices", "history",
    }
    for p in pngs:
        assert_real_png(p)

    trials = read_rows(d / "trials.csv")
    summary = json.loads((d / "summary.json").read_text())
    head = json.loads((d / "tables" / "headline.json").read_text())
    assert head["trials"] == len(trials)
    assert head["complete"] == sum(t["state"] == "COMPLETE" for t in trials)
    assert head["winner"]["trial"] == summary["winner"]["trial"]
    off = next(t for t in trials if t["baseline"] == "batching off")
    # batching off is re-measured beside the top configs: the gain is median against median
    off_runs = json.loads((d / "remeasure.json").read_text()).get(off["number"], [])
    assert off_runs, "batching off was not re-measured beside the top configs"
    off_median = statistics.median(r["items_per_s"] for r in off_runs)
    gain = summary["winner"]["items_per_s_median"] / off_median
    assert head["gain_over_batching_off"] == pytest.approx(gain)
    md = (d / "report.md").read_text()
    if summary["winner"]["trial"] == int(off["number"]):  # the spread rule may crown it
        assert "the winner is batching off itself" in md
    else:
        assert f"{gain:.2f}x the throughput of batching off" in md
    assert (d / "best_batching_parameters.txt").read_text().strip() in md
    # what the winner costs to run: the reference server's CPU and memory, read through psutil
    per_core = summary["winner"]["items_per_core_s_median"]
    assert per_core and per_core > summary["winner"]["items_per_s_min"] / 1.5  # it had one core
    assert f"**Resources**: {per_core:,.0f} items per core-second" in md
    assert "| server cores | items/core-s | peak MiB |" in md  # and per trial

    # every trial appears once in the report's full table
    for t in trials:
        assert f"\n| {t['number']} | {t['state']} |" in md

    top = read_rows(d / "tables" / "top.csv")
    assert top[0]["role"] == "winner"
    assert {r["role"] for r in top} >= {"winner", "baseline"}


def test_rejections_are_counted_and_explained(studies):
    d = studies["grpc"]
    trials = {int(t["number"]): t for t in read_rows(d / "trials.csv")}
    rej = read_rows(d / "tables" / "rejections.csv")
    assert rej, "16-item requests against max_batch_size 1 or 8 must be rejected somewhere"
    for r in rej:
        raw = json.loads(trials[int(r["trial"])]["errors"])
        assert int(r["INVALID_ARGUMENT"]) == raw.get("INVALID_ARGUMENT", 0)
        assert int(r["UNAVAILABLE"]) == raw.get("UNAVAILABLE", 0)
        if int(r["INVALID_ARGUMENT"]):
            assert "larger than max_batch_size" in r["cause"]
            assert "raise max_batch_size to at least 16" in r["fix"]
            assert "enable_large_batch_splitting" in r["fix"]
    # the commonly copied config (max_batch_size 8) meets 16-item requests
    copied = next(t for t in trials.values() if t["baseline"] == "commonly copied config")
    assert json.loads(copied["errors"]).get("INVALID_ARGUMENT", 0) > 0
    assert any(int(r["trial"]) == int(copied["number"]) for r in rej)


def test_batch_sizes_and_latency_tables_come_from_the_server_and_samples(studies):
    d = studies["grpc"]
    bs = read_rows(d / "tables" / "batch_sizes.csv")
    assert bs
    for trial in {r["trial"] for r in bs}:
        m = json.loads((d / "trials" / f"{int(trial):04d}" / "measurement.json").read_text())
        got = {r["batch_size_bucket"]: int(r["batches"]) for r in bs if r["trial"] == trial}
        assert got == {k: v for k, v in m["batch_size_histogram"].items()}
    q = read_rows(d / "tables" / "latency_quantiles.csv")
    assert q
    for trial in {r["trial"] for r in q}:
        lat = [float(r["latency_ms"]) for r in q if r["trial"] == trial]
        assert lat == sorted(lat) and lat[0] > 0


def test_a_published_copy_without_samples_keeps_its_distributions(studies, tmp_path):
    pub = tmp_path / "published"
    shutil.copytree(studies["grpc"], pub, ignore=shutil.ignore_patterns("samples"))
    before = (pub / "tables" / "latency_quantiles.csv").read_text()
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(pub)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (pub / "tables" / "latency_quantiles.csv").read_text() == before


def test_report_reads_files_only_and_survives_a_broken_file(studies, tmp_path):
    d = tmp_path / "copy"
    shutil.copytree(studies["grpc"], d, ignore=shutil.ignore_patterns("samples"))
    m = d / "trials" / "0001" / "measurement.json"
    m.write_text(m.read_text()[:40])  # a file cut short (written by something else than us)
    code = (
        "import sys; from harness.report.study import build; build(sys.argv[1]); "
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'optuna', 'locust', 'docker', 'grpc')]; "
        "print('HEAVY', heavy)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY []" in r.stdout
    md = (d / "report.md").read_text()
    assert "measurement.json in" in md and "unreadable" in md


def test_report_on_a_folder_that_is_not_a_study_is_one_clear_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness.cli", "report", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == EXIT_USAGE
    assert r.stderr.strip().startswith("error: ") and "has no trials.csv" in r.stderr
    assert "Traceback" not in r.stderr


def test_compare_rest_against_grpc(studies):
    out = studies["tmp"] / "cmp"
    r = subprocess.run(
        [sys.executable, "-m", "harness.cli", "compare", str(studies["grpc"]), str(studies["rest"]), "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    rows = read_rows(out / "tables" / "summary.csv")
    assert [x["study"] for x in rows] == ["rep-grpc", "rep-rest"]
    assert [x["protocol"] for x in rows] == ["grpc", "rest"]
    for x, d in zip(rows, (studies["grpc"], studies["rest"])):
        s = json.loads((d / "summary.json").read_text())
        assert float(x["winner_items_per_s"]) == pytest.approx(s["winner"]["items_per_s_median"])
    md = (out / "compare.md").read_text()
    assert "`load.protocol`" in md
    for p in (out / "plots").glob("*.png"):
        assert_real_png(p)
    assert len(list((out / "plots").glob("*.png"))) == 3


def test_html_report_renders_offline_in_chromium(studies, tmp_path):
    html_path = studies["grpc"] / "report.html"
    text = html_path.read_text()
    assert "<script" not in text and "<link" not in text
    assert "http://" not in text and "https://" not in text
    got = render(html_path, tmp_path / "shot.png", tmp_path / "profile")
    n_plots = len(list((studies["grpc"] / "plots").glob("*.png")))
    assert len(got["images"]) == n_plots
    for img in got["images"]:
        assert img["complete"] and img["width"] > 150 and img["height"] > 150, img
    assert got["outside_requests"] == []
    assert_real_png(got["screenshot"])

    # the check can fail: a page with a corrupted image is caught
    broken = tmp_path / "broken.html"
    start = text.index("base64,") + len("base64,")
    broken.write_text(text[:start] + "AAAA" + text[start + 200 :])
    bad = render(broken, tmp_path / "broken.png", tmp_path / "profile2")
    assert any(not i["width"] for i in bad["images"])
