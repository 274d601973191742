"""The job queue: engine work runs one job at a time, in order, off the event loop.

Jobs belong to the box, not to a BLE connection: a client may queue a mix, disconnect, and find
it finished (or still running) when it reconnects. The engine runs in a worker thread so the
event loop keeps serving BLE while a mix renders; its progress calls come back to the loop and
are passed on to listeners (the status characteristic). Cancelling a queued job removes it;
cancelling the running job makes the engine's next progress call raise; the engine writes
atomically, so a cancelled job leaves no output (and an older file of that name stays).

Examples
--------
>>> import asyncio, tempfile
>>> from melisma.device.jobs import JobQueue
>>> from melisma.device.storage import Storage
>>> from melisma.protocol import JobKind, JobState
>>> class CopyEngine:  # any object with the Engine methods will do
...     def mix(self, take, backing, out, *, style, sliders, progress):
...         progress("copy", 0.5); out.write_bytes(take.read_bytes()); return {}
>>> async def demo():
...     store = Storage(tempfile.mkdtemp())
...     for kind, name in ((1, "t.wav"), (2, "b.wav")):
...         store.path(kind, name).write_bytes(b"audio")
...     queue = JobQueue(CopyEngine(), store)
...     queue.start()
...     job = queue.submit(JobKind.MIX, take="t.wav", backing="b.wav", out="m.wav")
...     await queue.wait(job.id)
...     await queue.stop()
...     return job.state
>>> asyncio.run(demo())
<JobState.DONE: 3>
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import AlignmentUnknownError, DeviceError, MelismaError
from ..protocol import Controls, DeviceState, ErrorCode, FileKind, JobKind, JobState, Status
from .storage import Storage, StorageError

logger = logging.getLogger(__name__)

#: How many finished jobs are remembered (so a reconnecting client can ask about its job).
FINISHED_JOBS_KEPT = 32


class JobCancelled(DeviceError):
    """Raised inside the engine's progress callback when the running job was cancelled."""


class JobError(DeviceError):
    """A job request cannot be accepted; ``code`` is the protocol ErrorCode to reply with."""

    def __init__(self, message: str, code: ErrorCode):
        super().__init__(message)
        self.code = code


@dataclass
class Job:
    id: int
    kind: JobKind
    inputs: dict[str, Path]
    output: Path
    style: str
    sliders: dict[str, float]
    window_s: tuple[float, float] | None = None
    state: JobState = JobState.QUEUED
    stage: str = ""
    progress: float = 0.0
    error: ErrorCode = ErrorCode.OK
    detail: str = ""
    report: Any = None
    created: float = field(default_factory=time.monotonic)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    accept_alignment_guess: bool = False  # mix at the best guess when the take's offset is unknown


class JobQueue:
    """Runs jobs one at a time on ``engine``; listeners get a :class:`Status` after every change."""

    def __init__(self, engine, storage: Storage, *, controls: Callable[[], Controls] | None = None):
        self.engine = engine
        self.storage = storage
        self.controls = controls or Controls
        self.jobs: dict[int, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._ids = itertools.cycle(range(1, 0x10000))
        self.current: Job | None = None
        self.last: Job | None = None
        self.listeners: list[Callable[[Status], None]] = []
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- life cycle -----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="melisma-jobs")

    async def stop(self) -> None:
        if self.current is not None:
            self.current.cancel_requested.set()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    # -- requests -------------------------------------------------------------------------------

    def submit(self, kind: JobKind, *, take: str | None = None, backing: str | None = None, plan: str | None = None,
               out: str, start_s: float | None = None, duration_s: float | None = None,
               accept_alignment_guess: bool = False) -> Job:
        """Queue a job with the current controls; inputs must exist now (checked before queueing)."""
        try:
            inputs: dict[str, Path] = {}
            if kind in (JobKind.MIX, JobKind.ANALYSE):
                inputs["take"] = self.storage.existing(FileKind.TAKE, take)
                inputs["backing"] = self.storage.existing(FileKind.BACKING, backing)
            else:
                inputs["plan"] = self.storage.existing(FileKind.PLAN, plan)
            out_kind = {JobKind.MIX: FileKind.MIX, JobKind.RENDER: FileKind.MIX, JobKind.ANALYSE: FileKind.PLAN,
                        JobKind.PREVIEW: FileKind.PREVIEW}[JobKind(kind)]
            output = self.storage.path(out_kind, out)
        except StorageError as exc:
            raise JobError(str(exc), exc.code) from None
        if len(self._queue) >= 255:
            raise JobError("255 jobs are already queued; wait for some to finish or cancel them", ErrorCode.BUSY)
        controls = self.controls()
        job = Job(next(self._ids), JobKind(kind), inputs, output, controls.style.engine_name, controls.engine_sliders(),
                  (start_s or 0.0, duration_s) if kind == JobKind.PREVIEW else None)
        job.accept_alignment_guess = bool(accept_alignment_guess)
        self.jobs[job.id] = job
        self._queue.append(job)
        self._forget_old()
        self._wakeup.set()
        self._notify()
        return job

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued or running job; a finished job cannot be cancelled."""
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id}; known jobs are {sorted(self.jobs) or 'none'}", ErrorCode.NOT_FOUND)
        if job.state.finished:
            raise JobError(f"job {job_id} already finished ({job.state.name.lower()}); nothing to cancel",
                           ErrorCode.BAD_STATE)
        job.cancel_requested.set()
        if job.state is JobState.QUEUED:
            self._queue.remove(job)
            self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "cancelled before it started")
        return job

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        job = self.jobs[job_id]
        await asyncio.wait_for(job.done.wait(), timeout)
        return job

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> Status:
        job = self.current or self.last
        if job is None:
            return Status(queued=len(self._queue))
        return Status(
            state=DeviceState.BUSY if self.current is not None else DeviceState.IDLE,
            job_id=job.id, job_kind=job.kind, job_state=job.state,
            progress=min(1.0, max(0.0, job.progress)), queued=min(255, len(self._queue)),
            error=job.error, stage=job.stage,
        )

    def _notify(self) -> None:
        status = self.status()
        for listener in list(self.listeners):
            try:
                listener(status)
            except Exception:  # a broken listener must not stop the queue
                logger.exception("status listener failed")

    # -- worker ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            job = self._queue.popleft()
            self.current = job
            job.state = JobState.RUNNING
            self._notify()
            try:
                job.report = await asyncio.to_thread(self._call_engine, job)
            except asyncio.CancelledError:
                job.cancel_requested.set()
                self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "box shutting down")
                raise
            except JobCancelled:
                self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "cancelled")
            except MelismaError as exc:
                if job.cancel_requested.is_set():
                    self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "cancelled")
                else:
                    logger.warning("job %d failed: %s", job.id, exc)
                    # An unknown offset gets its own code, so the app can offer to accept the guess.
                    code = ErrorCode.ALIGNMENT_UNKNOWN if isinstance(exc, AlignmentUnknownError) else ErrorCode.ENGINE_FAILED
                    self._finish(job, JobState.FAILED, code, str(exc))
            except Exception as exc:  # an engine bug must not kill the queue
                logger.exception("job %d crashed", job.id)
                self._finish(job, JobState.FAILED, ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
            else:
                if job.cancel_requested.is_set():
                    with contextlib.suppress(OSError):
                        job.output.unlink()  # cancelled after the engine's last check: drop its output
                    self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "cancelled")
                else:
                    job.progress = 1.0
                    self._finish(job, JobState.DONE, ErrorCode.OK, "")
            self._enforce_storage_limits(job)

    def _enforce_storage_limits(self, job: Job) -> None:
        """Keep previews and plan work files within the storage limits (the job's output is kept)."""
        enforce = getattr(self.storage, "enforce_limits", None)
        if enforce is None:
            return
        try:
            deleted = enforce(keep=(job.output,))
        except Exception:  # storage housekeeping must never stop the queue
            logger.exception("storage limits could not be enforced after job %d", job.id)
            return
        if deleted:
            logger.info("storage limits: deleted %d least recently used file(s): %s", len(deleted),
                        ", ".join(p.name for p in deleted[:5]))

    def _call_engine(self, job: Job):
        def progress(stage: str, fraction: float) -> None:
            if job.cancel_requested.is_set():
                raise JobCancelled(f"job {job.id} was cancelled")
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_progress, job, str(stage), float(fraction))

        kw = dict(style=job.style, sliders=job.sliders, progress=progress)
        if job.accept_alignment_guess and job.kind in (JobKind.MIX, JobKind.ANALYSE):
            kw["accept_alignment_guess"] = True  # only when asked: engines without the option keep working
        if job.kind is JobKind.MIX:
            return self.engine.mix(job.inputs["take"], job.inputs["backing"], job.output, **kw)
        if job.kind is JobKind.ANALYSE:
            return self.engine.analyse(job.inputs["take"], job.inputs["backing"], job.output, **kw)
        if job.kind is JobKind.RENDER:
            return self.engine.render(job.inputs["plan"], job.output, **kw)
        start_s, duration_s = job.window_s
        return self.engine.preview(job.inputs["plan"], job.output, start_s=start_s, duration_s=duration_s, **kw)

    def _on_progress(self, job: Job, stage: str, fraction: float) -> None:
        if job.state is not JobState.RUNNING:
            return
        job.stage = stage
        job.progress = min(1.0, max(job.progress, fraction if fraction == fraction else 0.0))
        self._notify()

    def _finish(self, job: Job, state: JobState, error: ErrorCode, detail: str) -> None:
        job.state, job.error, job.detail = state, error, detail
        if self.current is job:
            self.current = None
        self.last = job
        job.done.set()
        self._notify()

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state.finished]
        for job in finished[:-FINISHED_JOBS_KEPT]:
            del self.jobs[job.id]
