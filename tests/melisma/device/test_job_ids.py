"""Job ids never repeat among the jobs the box remembers, across the 16-bit wrap and restarts, and an
interrupted job is re-run on request only when it really was interrupted (issue 16).

Ids are ``u16`` on the wire (Status, CommandReply, Cancel, Rerun), so 1.0/1.1 centrals keep
working: the box counts up across restarts (the journal keeps the counter), goes on at 1 after
65535, and skips every id it still remembers. The journals here are what the box itself writes
(``JobQueue._save_journal``), moved to the wrap by setting the counter a long-running box reaches.
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from melisma import audio_io
from melisma import protocol as p
from melisma.device.jobs import FINISHED_JOBS_KEPT, MAX_JOB_ID, JobError, JobQueue
from melisma.device.storage import Storage
from melisma.protocol import ErrorCode, FileKind, JobKind, JobState

SR = 48000


class CopyEngine:
    """Writes the take as the mix (through the engine's own atomic writer)."""

    def mix(self, take, backing, out, *, style, sliders, progress):
        progress("copy", 0.5)
        y, _ = audio_io.load_audio(take, sr=SR, mono=True)
        audio_io.write_audio(out, y, sr=SR, overwrite=True)
        return {}


@pytest.fixture
def store(tmp_path):
    s = Storage(tmp_path / "library")
    t = np.arange(SR // 4) / SR
    audio_io.write_audio(s.path(FileKind.TAKE, "t.wav"), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr=SR)
    audio_io.write_audio(s.path(FileKind.BACKING, "b.wav"), (0.1 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), sr=SR)
    return s


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def _set_counter(journal, next_id: int, renumber: dict[int, int] | None = None) -> None:
    """Edit a journal the box wrote as a box that has run ``next_id - 1`` jobs would hold it."""
    record = json.loads(journal.read_text())
    record["next_id"] = next_id
    for job in record["jobs"]:
        job["id"] = (renumber or {}).get(job["id"], job["id"])
    record["last"] = (renumber or {}).get(record["last"], record["last"])
    journal.write_text(json.dumps(record))


def _mix(q: JobQueue, out: str):
    return q.submit(JobKind.MIX, take="t.wav", backing="b.wav", out=out)


def test_ids_wrap_from_65535_to_1_skipping_every_id_still_remembered(store, tmp_path):
    journal = tmp_path / "jobs.json"
    q = JobQueue(CopyEngine(), store, journal=journal)
    for i in range(3):
        _mix(q, f"old{i}.wav")  # three jobs still queued (remembered) when the box restarts
    # these three are 65535, 1 and 2 of a box that has counted up to 65534 already
    _set_counter(journal, 65534, {1: 65535, 2: 1, 3: 2})

    async def main():
        q = JobQueue(CopyEngine(), store, journal=journal)
        assert sorted(q.jobs) == [1, 2, 65535]
        ids = [_mix(q, f"new{i}.wav").id for i in range(3)]
        q.start()
        for job_id in (*ids, 65535, 1, 2):
            await q.wait(job_id, 10)
        await q.stop()
        return q, ids

    q, ids = run(main())
    assert ids == [65534, 3, 4]  # 65535, 1 and 2 are remembered: skipped, never handed out twice
    assert all(q.jobs[i].state is JobState.DONE for i in (65534, 65535, 1, 2, 3, 4))
    assert json.loads(journal.read_text())["next_id"] == 5
    # the wire carries the top id as it is (u16), to a 1.0 client as to a 1.1 one
    status = p.Status(job_id=MAX_JOB_ID, job_state=JobState.DONE)
    assert p.decode(status.encode()).job_id == 65535
    assert p.decode(p.CommandReply(1, ErrorCode.OK, MAX_JOB_ID).encode()).job_id == 65535
    with pytest.raises(p.InvalidValueError):
        p.RerunCommand(1, MAX_JOB_ID + 1)


def test_the_counter_survives_restarts_at_the_boundary(store, tmp_path):
    journal = tmp_path / "jobs.json"
    q = JobQueue(CopyEngine(), store, journal=journal)
    _mix(q, "a.wav")
    _set_counter(journal, MAX_JOB_ID, {1: 7})  # one remembered job (7); the counter is at the top
    first = _mix(JobQueue(CopyEngine(), store, journal=journal), "b.wav").id
    second = _mix(JobQueue(CopyEngine(), store, journal=journal), "c.wav").id  # another restart
    third = _mix(JobQueue(CopyEngine(), store, journal=journal), "d.wav").id
    assert (first, second, third) == (65535, 1, 2)
    remembered = JobQueue(CopyEngine(), store, journal=journal).jobs
    assert sorted(remembered) == [1, 2, 7, 65535]


def test_a_forgotten_id_comes_back_only_after_the_wrap(store, tmp_path):
    q = JobQueue(CopyEngine(), store, journal=tmp_path / "jobs.json")

    async def main():
        q.start()
        seen = []
        for i in range(FINISHED_JOBS_KEPT + 8):
            job = _mix(q, f"m{i % 4}.wav")
            seen.append(job.id)
            await q.wait(job.id, 10)
        await q.stop()
        return seen

    seen = run(main())
    assert seen == list(range(1, FINISHED_JOBS_KEPT + 9))  # forgetting old jobs does not make ids come back
    assert 1 not in q.jobs and 8 in q.jobs  # 1..7 are forgotten, the last 33 remembered (32 kept at the next submit)
    # 65,535 jobs later the count wraps: forgotten ids are free again, remembered ones still skipped
    _set_counter(q.journal, MAX_JOB_ID)
    after = JobQueue(CopyEngine(), store, journal=q.journal)
    assert [_mix(after, "w.wav").id for _ in range(10)] == [65535, *range(1, 9), 41]  # 9..40 still remembered


def test_a_cut_off_journal_keeps_counting_after_the_wrap(store, tmp_path):
    journal = tmp_path / "jobs.json"
    # written after the wrap: the highest id (65535) is not the newest; the counter says 5
    journal.write_text('{"format": "melisma-jobs", "version": 1, "next_id": 5, "last": 4, "jobs": '
                       '[{"id": 3, "kind": "MIX"}, {"id": 4, "kind": "MIX"}, {"id": 65535, "ki')
    q = JobQueue(CopyEngine(), store, journal=journal)
    assert _mix(q, "m.wav").id == 5
    assert q.status().error is ErrorCode.INTERNAL and "jobs.json" in q.status().stage


def _interrupted(store, journal) -> int:
    """A journal with job 1 running when the power went, and job 2 finished before it."""
    q = JobQueue(CopyEngine(), store, journal=journal)
    done = _mix(q, "done.wav")
    running = _mix(q, "m1.wav")
    done.state = JobState.DONE
    running.state = JobState.RUNNING
    q._save_journal()
    return running.id


def test_rerun_refuses_unknown_ids_and_jobs_that_were_not_interrupted(store, tmp_path):
    journal = tmp_path / "jobs.json"
    crashed = _interrupted(store, journal)

    async def main():
        q = JobQueue(CopyEngine(), store, journal=journal)
        q.start()
        errors = {}
        for what, job_id in (("unknown", 60000), ("done", 1)):
            with pytest.raises(JobError) as exc:
                q.rerun(job_id)
            errors[what] = exc.value
        again = q.rerun(crashed)
        with pytest.raises(JobError) as twice:
            q.rerun(crashed)
        errors["twice"] = twice.value
        await q.wait(again.id, 10)
        await q.stop()
        return errors, again

    errors, again = run(main())
    assert errors["unknown"].code is ErrorCode.NOT_FOUND and "no job 60000" in str(errors["unknown"])
    assert "remembers jobs 1-2" in str(errors["unknown"])
    assert errors["done"].code is ErrorCode.BAD_STATE and "job 1 finished" in str(errors["done"])
    assert errors["twice"].code is ErrorCode.BAD_STATE and f"already queued again as job {again.id}" in str(errors["twice"])
    assert again.id == 3 and again.state is JobState.DONE and again.output.name == "m1.wav"
    # the link between the two survives a restart: the interrupted job cannot be re-run once more
    q2 = JobQueue(CopyEngine(), store, journal=journal)
    assert q2.jobs[crashed].rerun_as == again.id
    with pytest.raises(JobError, match="already queued again"):
        q2.rerun(crashed)


def test_rerun_says_when_the_inputs_are_gone(store, tmp_path, caplog):
    journal, auto_journal = tmp_path / "jobs.json", tmp_path / "auto-jobs.json"
    crashed = _interrupted(store, journal)
    _interrupted(store, auto_journal)
    store.delete(FileKind.TAKE, "t.wav")  # the user deleted the take from the app meanwhile
    q = JobQueue(CopyEngine(), store, journal=journal)
    with pytest.raises(JobError) as exc:
        q.rerun(crashed)
    assert exc.value.code is ErrorCode.NOT_FOUND and "take t.wav" in str(exc.value)
    assert q.jobs[crashed].rerun_as == 0  # still interrupted: it can be re-run once the take is back
    # the automatic re-run at start leaves such a job failed, with one warning, and the box starts
    auto = JobQueue(CopyEngine(), store, journal=auto_journal, rerun_interrupted=True)
    assert sorted(auto.jobs) == [1, 2] and auto.jobs[crashed].error is ErrorCode.INTERRUPTED
    assert any("is not queued again" in r.getMessage() and "take t.wav" in r.getMessage() for r in caplog.records)
