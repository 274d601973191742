"""The box's own hardening, in process (issue 16): the job journal, the free-space floor, uploads that
hit a full disk, start-up repair and the rejection guard.

The same failures are shown end to end against a real ``melisma-device`` process in
test_box_faults.py; these tests pin the mechanisms down quickly and run everywhere (the disk-full
upload uses ``ulimit -f``: the kernel refuses the write with EFBIG, no fake needed).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from melisma import audio_io
from melisma.device.guard import RejectionGuard
from melisma.device.jobs import JobError, JobQueue
from melisma.device.repair import check_bonds, load_identity, repair_data_dir
from melisma.device.storage import Storage, StorageError
from melisma.errors import DeviceError
from melisma.protocol import ErrorCode, FileKind, JobKind, JobState

SR = 48000


class CopyEngine:
    """Writes the take as the mix (through the engine's own atomic writer)."""

    def __init__(self):
        self.calls = []

    def mix(self, take, backing, out, *, style, sliders, progress):
        self.calls.append(out.name)
        progress("copy", 0.5)
        y, _ = audio_io.load_audio(take, sr=SR, mono=True)
        audio_io.write_audio(out, y, sr=SR, overwrite=True)
        return {}


@pytest.fixture
def store(tmp_path):
    s = Storage(tmp_path / "library")
    t = np.arange(SR // 2) / SR
    audio_io.write_audio(s.path(FileKind.TAKE, "t.wav"), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr=SR)
    audio_io.write_audio(s.path(FileKind.BACKING, "b.wav"), (0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), sr=SR)
    return s


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def _crashed_journal(store, journal, *, running_out="m1.wav", queued_out="m2.wav"):
    """What the journal holds when the box dies with one job running and one queued."""
    q = JobQueue(CopyEngine(), store, journal=journal)
    running = q.submit(JobKind.MIX, take="t.wav", backing="b.wav", out=running_out)
    q.submit(JobKind.MIX, take="t.wav", backing="b.wav", out=queued_out)
    running.state = JobState.RUNNING  # the worker had taken it when the power went
    q._save_journal()
    return running.id


def test_a_job_running_at_a_crash_is_failed_interrupted_and_ids_go_on(store, tmp_path):
    journal = tmp_path / "jobs.json"
    crashed = _crashed_journal(store, journal)
    mixes = store.root / "mixes"
    # what the killed job left: its staged output and an analysis work folder (dead pid)
    (mixes / ".m1.wav.melisma-999999999-abcd1234.part.wav").write_bytes(b"half a mix")
    (mixes / ".melisma-work-999999999-abcd1234").mkdir()

    async def main():
        store.sweep_leftovers()  # the box does this at start, before the queue
        q = JobQueue(CopyEngine(), store, journal=journal)
        status = q.status()
        q.start()
        queued = q.jobs[crashed + 1]
        await q.wait(queued.id, 10)
        again = q.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m3.wav")
        await q.wait(again.id, 10)
        await q.stop()
        return q, status, again

    q, status, again = run(main())
    interrupted = q.jobs[crashed]
    assert interrupted.state is JobState.FAILED and interrupted.error is ErrorCode.INTERRUPTED
    assert status.job_id == crashed and status.error is ErrorCode.INTERRUPTED  # what a client sees first
    assert q.jobs[crashed + 1].state is JobState.DONE  # the queued job survived the crash and ran
    assert again.id == crashed + 2  # never an id seen before
    assert sorted(p.name for p in mixes.iterdir()) == ["m2.wav", "m3.wav"]
    record = json.loads(journal.read_text())
    assert [j["state"] for j in record["jobs"]] == ["FAILED", "DONE", "DONE"] and record["next_id"] == crashed + 3


def test_an_interrupted_job_is_rerun_on_request_or_automatically(store, tmp_path):
    journal = tmp_path / "jobs.json"
    crashed = _crashed_journal(store, journal)

    async def main(auto):
        q = JobQueue(CopyEngine(), store, journal=journal, rerun_interrupted=auto)
        q.start()
        again = q.rerun(crashed) if not auto else q.jobs[max(q.jobs)]
        await q.wait(again.id, 10)
        await q.stop()
        return q, again

    q, again = run(main(auto=True))
    assert again.id > crashed + 1 and again.state is JobState.DONE and again.output.name == "m1.wav"
    assert "re-queued as job" in q.jobs[crashed].detail
    with pytest.raises(JobError) as exc:
        JobQueue(CopyEngine(), store, journal=journal).rerun(60000)
    assert exc.value.code is ErrorCode.NOT_FOUND


def test_a_damaged_journal_is_moved_aside_and_ids_do_not_repeat(store, tmp_path):
    journal = tmp_path / "jobs.json"
    journal.write_text('{"format": "melisma-jobs", "jobs": [{"id": 41, "kind": "MIX"}, {"id": 42, "ki')
    q = JobQueue(CopyEngine(), store, journal=journal)
    assert [p.name.startswith("jobs.json.damaged-") for p in tmp_path.iterdir() if p.name != "library"] == [True]
    assert q._new_id() == 43
    assert q.status().error is ErrorCode.INTERNAL and "jobs.json" in q.status().stage


def test_the_free_space_floor_refuses_new_work_and_status_says_so(store):
    free = shutil.disk_usage(store.root).free
    store.min_free_bytes = free + (1 << 30)  # a floor above what this disk has free: the real check
    q = JobQueue(CopyEngine(), store)
    with pytest.raises(JobError) as exc:
        q.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m.wav")
    assert exc.value.code is ErrorCode.NO_SPACE and "storage.min_free_mib" in str(exc.value)
    with pytest.raises(StorageError) as up:
        store.begin_upload(FileKind.TAKE, "new.wav", 10, hashlib.sha256(b"0123456789").digest())
    assert up.value.code is ErrorCode.NO_SPACE
    status = q.status()
    assert status.error is ErrorCode.NO_SPACE and status.stage.startswith("low space")
    store.min_free_bytes = 0
    assert q.status().error is ErrorCode.OK
    assert q.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m.wav").id == 1


UPLOAD = textwrap.dedent('''
    import hashlib, json, sys
    from melisma.device.storage import Storage, StorageError
    from melisma.protocol import FileKind
    root, data_path = sys.argv[1], sys.argv[2]
    data = open(data_path, "rb").read()
    up = Storage(root).begin_upload(FileKind.TAKE, "t.m4a", len(data), hashlib.sha256(data).digest())
    out = {"start": up.offset, "errors": []}
    while up.offset < len(data):
        try:
            up.write(up.offset, data[up.offset:up.offset + 4000])
        except StorageError as exc:
            out["errors"].append(exc.code.name)
            if len(out["errors"]) == 2:
                break
    out["offset"] = up.offset
    if up.offset == len(data):
        out["stored"] = up.commit().name
    print(json.dumps(out))
''')


def test_an_upload_that_hits_a_full_disk_fails_once_truncated_to_the_last_good_chunk(tmp_path):
    data = os.urandom(300_000)
    (tmp_path / "data.bin").write_bytes(data)
    root = tmp_path / "library"
    # the kernel refuses to let the file pass 100 blocks (EFBIG, the same path as ENOSPC)
    limited = subprocess.run(["sh", "-c", 'ulimit -f 100; exec "$@"', "sh", sys.executable, "-c", UPLOAD, str(root),
                              str(tmp_path / "data.bin")], capture_output=True, text=True, timeout=60)
    first = json.loads(limited.stdout)
    part = next((root / "partial").glob("*.part"))
    assert first["errors"] == ["NO_SPACE", "NO_SPACE"]  # the second write is refused at once, nothing retried
    # exactly the last good chunk, never half of the one that failed
    assert first["offset"] == part.stat().st_size and first["offset"] % 4000 == 0 and 0 < first["offset"] <= 100 * 1024
    assert part.read_bytes() == data[:first["offset"]]
    freed = subprocess.run([sys.executable, "-c", UPLOAD, str(root), str(tmp_path / "data.bin")], capture_output=True,
                           text=True, timeout=60)
    second = json.loads(freed.stdout)
    assert second["start"] == first["offset"] and second["stored"] == "t.m4a"  # resumed, SHA-256 good
    assert (root / "takes" / "t.m4a").read_bytes() == data


def test_start_up_repair_moves_damaged_files_aside(tmp_path):
    (tmp_path / "bonds.json").write_text('{"F0:01/P": {"C0:02": {"ltk": ')
    (tmp_path / "controls.json").write_bytes(b"\x00\x00")
    (tmp_path / "library").write_text("oops")
    notices = repair_data_dir(tmp_path, ["takes", "mixes"])
    assert [n for _, n in notices] == ["bonds.json damaged", "controls.json damaged", "library was a file"]
    names = sorted(p.name for p in tmp_path.iterdir())
    assert [n.split(".damaged-")[0] for n in names] == ["bonds.json", "controls.json", "library"]
    assert check_bonds(tmp_path / "bonds.json") == []  # nothing there now: fine, phones pair again


def test_identity_is_recovered_or_refused_never_regenerated(tmp_path):
    ident, _ = load_identity(tmp_path)
    address = ident["address"]
    (tmp_path / "identity.json").write_text(json.dumps(ident)[:-10])  # cut off by a power cut
    again, notices = load_identity(tmp_path)
    assert again["address"] == address and notices
    (tmp_path / "identity.json").write_bytes(b"")
    with pytest.raises(DeviceError, match="will not make a new address"):
        load_identity(tmp_path)
    assert (tmp_path / "identity.json").read_bytes() == b""
    given, _ = load_identity(tmp_path, "F0:12:34:56:78:9A")  # the owner gives the old address: used
    assert given["address"] == "F0:12:34:56:78:9A"


def test_rejections_are_logged_at_most_once_per_interval_and_floods_dropped(caplog):
    now = [0.0]
    guard = RejectionGuard(interval_s=10, drop_after=200, clock=lambda: now[0])
    verdicts = []
    with caplog.at_level(logging.WARNING, logger="melisma.device.guard"):
        for i in range(1000):
            now[0] = i * 0.001  # 1000 refusals within one second
            verdicts.append(guard.refuse("conn", "not bonded", peer="C0:00:00:00:00:99"))
        guard.refuse("quiet", "not bonded")
        now[0] = 25.0
        guard.refuse("quiet", "not bonded")
    lines = [r.getMessage() for r in caplog.records]
    assert verdicts.count("drop") == 1 and verdicts.index("drop") == 200
    assert len([m for m in lines if "C0:00:00:00:00:99" in m]) == 2  # the first refusal, then the drop
    assert len([m for m in lines if "quiet" in m]) == 2  # once, and once again after the interval
    assert guard.stats("conn") == {"refused": 1000, "logged": 2, "dropped": True}


def test_a_job_stopped_by_the_box_shutting_down_runs_again_at_the_next_start(store, tmp_path):
    journal = tmp_path / "jobs.json"
    started = threading.Event()

    class SlowEngine(CopyEngine):
        def mix(self, take, backing, out, *, style, sliders, progress):
            started.set()
            for _ in range(200):  # until the shutdown's cancel reaches the next progress step
                progress("slow", 0.1)
                time.sleep(0.01)
            return super().mix(take, backing, out, style=style, sliders=sliders, progress=progress)

    async def first():
        q = JobQueue(SlowEngine(), store, journal=journal)
        q.start()
        job = q.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m.wav")
        await asyncio.to_thread(started.wait, 10)
        await q.stop()  # systemd stops the box (an update, a reboot) in the middle of the mix
        return job.id

    async def second(job_id):
        q = JobQueue(CopyEngine(), store, journal=journal)
        q.start()
        job = await q.wait(job_id, 10)
        await q.stop()
        return job

    job_id = run(first())
    job = run(second(job_id))
    assert job.state is JobState.DONE  # the same job, under its id, finished after the restart
    assert store.entry(FileKind.MIX, "m.wav").size > 0
