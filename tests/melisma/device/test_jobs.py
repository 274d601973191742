"""The job queue: one at a time, in order, cancellable, progress to listeners.

The engine is injected; here it is a small real one (sums take and backing with audio_io) so the
queue mechanics are tested independently of the full mixing engine.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from melisma import audio_io
from melisma.device.jobs import JobError, JobQueue
from melisma.device.storage import Storage
from melisma.errors import RenderError
from melisma.protocol import Controls, DeviceState, ErrorCode, FileKind, JobKind, JobState, Style

SR = 48000


class SumEngine:
    """Adds take and backing; reports progress in steps; can be held at a step by a gate."""

    def __init__(self, steps=4):
        self.steps = steps
        self.calls = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def mix(self, take, backing, out, *, style, sliders, progress):
        self.calls.append(("mix", out.name, style, dict(sliders)))
        a, _ = audio_io.load_audio(take, sr=SR, mono=True)
        b, _ = audio_io.load_audio(backing, sr=SR, mono=True)
        for i in range(self.steps):
            self.entered.set()
            self.gate.wait(5)
            progress(f"step{i}", i / self.steps)
        n = min(len(a), len(b))
        audio_io.write_audio(out, 0.5 * (a[:n] + b[:n]), sr=SR, overwrite=True)
        progress("done", 1.0)
        return {"samples": n}

    def analyze(self, take, backing, plan, *, style, sliders, progress):
        raise RenderError(f"{take.name}: cannot analyze a take that is silent; record again")


@pytest.fixture
def store(tmp_path):
    s = Storage(tmp_path)
    t = np.arange(SR // 2) / SR
    audio_io.write_audio(s.path(FileKind.TAKE, "t.wav"), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr=SR)
    audio_io.write_audio(s.path(FileKind.BACKING, "b.wav"), (0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), sr=SR)
    return s


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_jobs_run_in_order_with_progress_and_current_controls(store):
    async def main():
        engine = SumEngine()
        controls = Controls(Style.CPOP, {"warmth": 0.5})
        queue = JobQueue(engine, store, controls=lambda: controls)
        seen = []
        queue.listeners.append(seen.append)
        queue.start()
        j1 = queue.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m1.wav")
        j2 = queue.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m2.wav")
        assert queue.status().queued == 2
        await queue.wait(j2.id, 10)
        await queue.stop()
        return engine, j1, j2, seen

    engine, j1, j2, seen = run(main())
    assert [c[1] for c in engine.calls] == ["m1.wav", "m2.wav"]
    assert engine.calls[0][2:] == ("cpop", {"warmth": 0.5})
    assert j1.state is JobState.DONE and j2.state is JobState.DONE
    assert store.entry(FileKind.MIX, "m1.wav").size > 0
    running = [s for s in seen if s.job_id == j1.id and s.job_state is JobState.RUNNING]
    progress = [s.progress for s in running]
    assert progress == sorted(progress) and len(set(progress)) >= 3
    assert all(s.state is DeviceState.BUSY for s in running)
    # never two running at once: while j1 runs, j2 is counted as queued
    assert any(s.queued == 1 for s in running)
    assert seen[-1].job_id == j2.id and seen[-1].job_state is JobState.DONE and seen[-1].state is DeviceState.IDLE


def test_cancel_running_and_queued_jobs(store):
    async def main():
        engine = SumEngine()
        engine.gate.clear()
        queue = JobQueue(engine, store)
        queue.start()
        j1 = queue.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m1.wav")
        j2 = queue.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m2.wav")
        await asyncio.to_thread(engine.entered.wait, 5)
        queue.cancel(j2.id)  # queued: removed at once
        assert j2.state is JobState.CANCELLED
        queue.cancel(j1.id)  # running: stops at its next progress call
        engine.gate.set()
        await queue.wait(j1.id, 10)
        with pytest.raises(JobError) as exc:
            queue.cancel(j1.id)
        assert exc.value.code == ErrorCode.BAD_STATE
        # the queue still works after a cancel
        j3 = queue.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m3.wav")
        await queue.wait(j3.id, 10)
        await queue.stop()
        return engine, j1, j3

    engine, j1, j3 = run(main())
    assert j1.state is JobState.CANCELLED and j1.error is ErrorCode.CANCELLED
    assert not store.path(FileKind.MIX, "m1.wav").exists()
    assert not store.path(FileKind.MIX, "m2.wav").exists()
    assert j3.state is JobState.DONE
    assert [c[1] for c in engine.calls] == ["m1.wav", "m3.wav"]


def test_engine_errors_and_bad_requests_are_typed(store):
    async def main():
        queue = JobQueue(SumEngine(), store)
        queue.start()
        with pytest.raises(JobError) as exc:
            queue.submit(JobKind.MIX, take="missing.wav", backing="b.wav", out="m.wav")
        assert exc.value.code == ErrorCode.NOT_FOUND and "t.wav" in str(exc.value)
        with pytest.raises(JobError) as exc:
            queue.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="../m.wav")
        assert exc.value.code == ErrorCode.BAD_NAME
        with pytest.raises(JobError) as exc:
            queue.cancel(999)
        assert exc.value.code == ErrorCode.NOT_FOUND
        job = queue.submit(JobKind.ANALYZE, take="t.wav", backing="b.wav", out="p.json")
        await queue.wait(job.id, 10)
        ok = queue.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m.wav")
        await queue.wait(ok.id, 10)
        await queue.stop()
        return job, ok

    job, ok = run(main())
    assert job.state is JobState.FAILED and job.error is ErrorCode.ENGINE_FAILED and "silent" in job.detail
    assert ok.state is JobState.DONE


def test_after_each_job_the_queue_keeps_previews_within_the_storage_limit(tmp_path):
    import os

    from melisma.device.storage import StorageLimits

    store = Storage(tmp_path, limits=StorageLimits(previews_bytes=3000, work_bytes=None))
    store.path(FileKind.PLAN, "p.json").write_text("{}")

    class PreviewEngine:
        def preview(self, plan, out, *, style, sliders, start_s, duration_s, progress):
            out.write_bytes(b"x" * 2000)
            return {}

    async def main():
        queue = JobQueue(PreviewEngine(), store)
        queue.start()
        names = []
        for i in range(3):
            job = queue.submit(JobKind.PREVIEW, plan="p.json", out=f"v{i}.ogg", start_s=0.0, duration_s=5.0)
            await queue.wait(job.id)
            assert job.state is JobState.DONE
            os.utime(job.output, (1000 + i, 1000 + i))  # distinct last-use times
            names.append(sorted(e.name for e in store.list(FileKind.PREVIEW)))
        await queue.stop()
        return names

    names = run(main())
    # 3000 bytes hold one 2000-byte preview: each job's own output stays, the older ones go
    assert names == [["v0.ogg"], ["v1.ogg"], ["v2.ogg"]]


def test_a_journal_written_with_the_old_spelling_still_reads(tmp_path):
    from melisma.device.jobs import Job

    record = {"id": 7, "kind": "ANALYSE", "state": "DONE", "error": "OK", "inputs": {"take": "t.wav", "backing": "b.wav"},
              "output": "p.json", "style": "neutral", "sliders": {}, "window_s": None}
    job = Job.from_json(record, tmp_path)
    assert job.kind is JobKind.ANALYZE
    assert job.to_json(tmp_path)["kind"] == "ANALYZE"
