"""melisma batch: a manifest of mixes on a process pool (or local Ray), failures reported and retried
a bounded number of times, finished rows not redone, an interrupted batch resumed with nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from melisma import audio_io, batch
from melisma.cli import main

from tools.corpus import make_scenario
from tools.corpus.scenarios import write_scenario


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch")
    for seed in (31, 32):
        sc = make_scenario(seed=seed, duration_s=4.0, backing_renderer="numpy", offset_ms=60.0, bleed_db=-16.0, snr_db=25.0)
        write_scenario(sc, folder / f"s{seed}", take_format="wav", backing_format="wav", include_backing_midi=False)
    return folder


def _manifest(folder: Path, songs: Path, rows: list[tuple[str, str, dict, str]], *, jsonl: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    def rel(p: str) -> str:
        return os.path.relpath(songs / p, folder) if not p.startswith("missing") else p
    if jsonl:
        path = folder / "jobs.jsonl"
        path.write_text("".join(json.dumps({"take": rel(t), "backing": rel(b), "settings": s, "output": o}) + "\n"
                                for t, b, s, o in rows))
    else:
        import csv
        path = folder / "jobs.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["take", "backing", "settings", "output"])
            for t, b, s, o in rows:
                w.writerow([rel(t), rel(b), json.dumps(s) if s else "", o])
    return path


ROWS = [
    ("s31/take.wav", "s31/backing.wav", {"style": "cpop"}, "out/a.wav"),
    ("s32/take.wav", "s32/backing.wav", {"style": "western", "sliders": {"reverb": -0.3}}, "out/b.m4a"),
    ("s31/take.wav", "s31/backing.wav", {"style": "ballad", "pitch": False}, "out/c.flac"),
]


def _assert_mix(path: Path) -> None:
    y, sr = audio_io.load_audio(path)
    assert sr == 48000 and y.shape[0] == 2 and y.shape[1] > 3 * sr and np.max(np.abs(y)) > 0.05


def test_batch_on_two_processes_reports_a_bad_row_and_does_not_redo_finished_ones(songs, tmp_path, capsys):
    rows = [*ROWS, ("missing-take.wav", "s31/backing.wav", {}, "out/d.wav")]
    manifest = _manifest(tmp_path, songs, rows)
    code = main(["batch", str(manifest), "--workers", "2", "--report", str(tmp_path / "result.json")])
    _, err = capsys.readouterr()
    assert code == batch.BatchError.exit_code
    for name in ("a.wav", "b.m4a", "c.flac"):
        _assert_mix(tmp_path / "out" / name)
    assert not (tmp_path / "out" / "d.wav").exists()
    assert "row 4" in err and "missing-take.wav" in err and "after 1 attempt" in err  # not retried: it cannot change
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["done"] == [1, 2, 3] and list(result["failed"]) == ["4"] and result["workers"] == 2
    pids = {json.loads(line).get("row") for line in batch.state_path(manifest).read_text().splitlines()}
    assert pids == {1, 2, 3, 4}
    stamp = (tmp_path / "out" / "a.wav").stat().st_mtime_ns
    # run again: the three finished rows are skipped, only the bad one is tried
    again = batch.run_batch(manifest, workers=2)
    assert again.skipped == [1, 2, 3] and again.done == [] and list(again.failed) == [4]
    assert (tmp_path / "out" / "a.wav").stat().st_mtime_ns == stamp
    # a finished row whose output was deleted is made again; --force redoes everything
    (tmp_path / "out" / "b.m4a").unlink()
    assert batch.run_batch(manifest, workers=1, retries=0).done == [2]
    _assert_mix(tmp_path / "out" / "b.m4a")


def test_transient_failures_are_retried_a_bounded_number_of_times(songs, tmp_path):
    manifest = _manifest(tmp_path, songs, ROWS[:2], jsonl=True)
    calls: dict[int, int] = {}

    def flaky(tasks):  # row 1's worker "dies" twice, then works; row 2's always dies
        for task in tasks:
            calls[task["index"]] = calls.get(task["index"], 0) + 1
            if task["index"] == 2 or calls[task["index"]] <= 2:
                yield task, {"ok": False, "error": "worker process died (BrokenProcessPool)", "permanent": False}
            else:
                yield task, batch.mix_row(task)

    result = batch.run_batch(manifest, retries=2, runner=flaky)
    assert result.done == [1] and result.attempts == {1: 3, 2: 3}
    assert result.failed == {2: "worker process died (BrokenProcessPool)"}
    assert calls == {1: 3, 2: 3}  # 1 + retries, no more
    _assert_mix(tmp_path / "out" / "a.wav")


def test_an_interrupted_batch_resumes_with_nothing_half_written(songs, tmp_path):
    rows = [(t, b, s, f"out/{i}-{Path(o).name}") for i, (t, b, s, o) in enumerate(ROWS * 2)]
    manifest = _manifest(tmp_path, songs, rows)
    state = batch.state_path(manifest)
    proc = subprocess.Popen([sys.executable, "-m", "melisma.cli", "batch", str(manifest), "--workers", "1", "-q"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (state.exists() and '"done"' in state.read_text()):
            time.sleep(0.05)
        assert state.exists(), "the batch never finished a row"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the batch and its worker, mid-row
        proc.wait()
    finished = batch.finished_keys(state)
    assert 1 <= len(finished) < len(rows)
    out = tmp_path / "out"
    for row in batch.read_manifest(manifest):  # every output under its own name is complete or absent
        if row.output.exists():
            assert row.key in finished
            _assert_mix(row.output)
    result = batch.run_batch(manifest, workers=2)
    assert sorted(result.done + result.skipped) == list(range(1, len(rows) + 1)) and not result.failed
    assert len(result.skipped) == len(finished)
    for row in batch.read_manifest(manifest):
        _assert_mix(row.output)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the killed row's staged file and work folder are swept


def test_manifest_errors_name_the_row_and_what_would_work(tmp_path):
    (tmp_path / "a.csv").write_text("take,output\nx.wav,y.wav\n")
    with pytest.raises(batch.BatchError, match="lacks backing, settings"):
        batch.read_manifest(tmp_path / "a.csv")
    (tmp_path / "b.jsonl").write_text('{"take": "x.wav", "backing": "y.wav", "output": "o.wav", "settings": {"colour": 1}}\n')
    with pytest.raises(batch.BatchError, match=r"b\.jsonl:1: unknown settings colour"):
        batch.read_manifest(tmp_path / "b.jsonl")
    line = '{"take": "x", "backing": "y", "output": "o.wav"}\n'
    (tmp_path / "c.jsonl").write_text(line + line)
    with pytest.raises(batch.BatchError, match="also the output of"):
        batch.read_manifest(tmp_path / "c.jsonl")


def test_batch_on_a_local_ray_instance(songs, tmp_path, monkeypatch):
    monkeypatch.setenv(*batch.RAY_LOOPBACK_ENV)  # Ray on 127.0.0.1 only (set before Ray is imported)
    ray = pytest.importorskip("ray")  # Ray is the optional 'batch' extra (in the test extra where it installs)
    manifest = _manifest(tmp_path, songs, ROWS[:2])
    try:
        result = batch.run_batch(manifest, ray_address="local", workers=2)
        assert result.backend == "ray" and result.done == [1, 2] and not result.failed
        nodes = ray.nodes()
        assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes)
    finally:
        ray.shutdown()
    _assert_mix(tmp_path / "out" / "a.wav")
    _assert_mix(tmp_path / "out" / "b.m4a")
    assert batch.run_batch(manifest, ray_address="local", workers=1).skipped == [1, 2]
