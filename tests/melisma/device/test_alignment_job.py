"""The box refuses a take whose offset is unknown with its own error code, and mixes it at the
best guess when the app asks for that (issue 13), through the real engine and the real protocol."""

from __future__ import annotations

import asyncio

import pytest
from melisma import audio_io
from melisma import protocol as p
from melisma.device.engine_adapter import PipelineEngine
from melisma.device.jobs import JobQueue
from melisma.device.storage import Storage
from melisma.protocol import ErrorCode, FileKind, JobKind, JobState

from tools.corpus.scenarios import make_scenario

SR = 48000


@pytest.fixture(scope="module")
def headphone_store(tmp_path_factory):
    store = Storage(tmp_path_factory.mktemp("box"))
    sc = make_scenario(seed=21, duration_s=6.0, sr=SR, offset_ms=180.0, bleed_db=None, snr_db=25.0)
    audio_io.write_audio(store.path(FileKind.TAKE, "hp.wav"), sc.take, sr=SR)
    audio_io.write_audio(store.path(FileKind.BACKING, "song.wav"), sc.backing, sr=SR)
    return store


def _run_job(store, **submit):
    async def main():
        queue = JobQueue(PipelineEngine(), store)
        statuses = []
        queue.listeners.append(statuses.append)
        queue.start()
        job = queue.submit(JobKind.MIX, take="hp.wav", backing="song.wav", out="mix.wav", **submit)
        await queue.wait(job.id, 120)
        await queue.stop()
        return job, statuses

    return asyncio.run(main())


def test_unknown_offset_fails_the_job_with_alignment_unknown_and_mixes_when_accepted(headphone_store):
    job, statuses = _run_job(headphone_store)
    assert job.state is JobState.FAILED
    assert job.error is ErrorCode.ALIGNMENT_UNKNOWN
    assert "--latency-ms" in job.detail and "speaker" in job.detail
    last = statuses[-1]
    assert last.job_state is JobState.FAILED and last.error is ErrorCode.ALIGNMENT_UNKNOWN
    # the Status the app receives carries the same code after a round trip through the wire format
    assert p.decode(last.encode()).error is ErrorCode.ALIGNMENT_UNKNOWN
    assert not headphone_store.path(FileKind.MIX, "mix.wav").exists()

    job, _ = _run_job(headphone_store, accept_alignment_guess=True)
    assert job.state is JobState.DONE, job.detail
    assert job.report["alignment"]["decision"] == "accepted guess"
    assert headphone_store.path(FileKind.MIX, "mix.wav").exists()


@pytest.mark.parametrize("cls, last", [(p.MixCommand, "out"), (p.AnalyzeCommand, "plan")])
def test_accept_guess_flag_is_an_optional_trailing_byte(cls, last):
    plain = cls(7, "t.m4a", "b.m4a", **{last: "x.m4a" if last == "out" else "x.json"})
    flagged = cls(7, "t.m4a", "b.m4a", **{last: "x.m4a" if last == "out" else "x.json"}, accept_alignment_guess=True)
    # without the flag the message is byte for byte what older apps and boxes send
    assert flagged.encode() == plain.encode() + bytes([p.JOB_FLAG_ACCEPT_ALIGNMENT_GUESS])
    assert p.decode(plain.encode()).accept_alignment_guess is False
    assert p.decode(flagged.encode()) == flagged
    with pytest.raises(p.MalformedMessageError, match="unknown bits"):
        p.decode(plain.encode() + b"\x02")
    with pytest.raises(p.OversizedMessageError):
        p.decode(flagged.encode() + b"\x00")
