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
import json
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AlignmentUnknownError, DeviceError, MelismaError
from ..protocol import MAX_JOB_ID as _WIRE_MAX_JOB_ID
from ..protocol import Controls, DeviceState, ErrorCode, FileKind, JobKind, JobState, Status
from .storage import Storage, StorageError, is_no_space

logger = logging.getLogger(__name__)

#: How many finished jobs are remembered (so a reconnecting client can ask about its job).
FINISHED_JOBS_KEPT = 32
#: Format tag of the job journal (``<data-dir>/jobs.json``).
JOURNAL_FORMAT = "melisma-jobs"
#: Job ids are 16-bit on the wire; they count up across restarts (the journal keeps the counter),
#: wrap from 65535 to 1 and skip every id still remembered (see :meth:`JobQueue._new_id`).
MAX_JOB_ID = _WIRE_MAX_JOB_ID


class JobCancelled(DeviceError):
    """Raised inside the engine's progress callback when the running job was cancelled."""


class JobError(DeviceError):
    """A job request cannot be accepted; ``code`` is the protocol ErrorCode to reply with."""

    def __init__(self, message: str, code: ErrorCode):
        super().__init__(message)
        self.code = code


@dataclass
class Job:
    """One queued job: its id, kind, inputs, state, progress and outcome."""

    id: int
    kind: JobKind
    inputs: dict[str, Path]
    output: Path
    style: str
    sliders: dict[str, float]
    window_s: tuple[float, float | None] | None = None  # a preview's start and duration
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
    rerun_as: int = 0  # the id this (interrupted) job was queued again under, 0 if it was not

    def to_json(self, root: Path) -> dict[str, Any]:
        """The journal record of this job (paths relative to the library ``root``)."""
        return {"id": self.id, "kind": self.kind.name, "state": self.state.name, "error": self.error.name,
                "detail": self.detail, "stage": self.stage, "progress": self.progress,
                "inputs": {k: _relative(v, root) for k, v in self.inputs.items()}, "output": _relative(self.output, root),
                "style": self.style, "sliders": self.sliders, "window_s": list(self.window_s) if self.window_s else None,
                "accept_alignment_guess": self.accept_alignment_guess, "rerun_as": self.rerun_as}

    @classmethod
    def from_json(cls, d: dict[str, Any], root: Path) -> Job:
        """A job from its journal record (raises KeyError/ValueError/TypeError when it is damaged)."""
        job = cls(int(d["id"]), JobKind[d["kind"]], {k: root / v for k, v in d["inputs"].items()}, root / d["output"],
                  str(d["style"]), {str(k): float(v) for k, v in d["sliders"].items()},
                  tuple(d["window_s"]) if d.get("window_s") else None)
        job.state, job.error = JobState[d["state"]], ErrorCode[d["error"]]
        job.detail, job.stage, job.progress = str(d.get("detail", "")), str(d.get("stage", "")), float(d.get("progress", 0))
        job.accept_alignment_guess = bool(d.get("accept_alignment_guess", False))
        job.rerun_as = int(d.get("rerun_as", 0))
        if not 1 <= job.id <= MAX_JOB_ID:
            raise ValueError(f"job id {job.id} is out of range")
        if job.state.finished:
            job.done.set()
        return job


def _id_ranges(jobs: dict[int, Job]) -> str:
    """The remembered job ids as short ranges, e.g. ``3-7, 12`` (a reply detail is short)."""
    ids = sorted(jobs)
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ", ".join(parts)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class JobQueue:
    """Runs jobs one at a time on ``engine``; listeners get a :class:`Status` after every change."""

    def __init__(self, engine, storage: Storage, *, controls: Callable[[], Controls] | None = None,
                 journal: str | Path | None = None, rerun_interrupted: bool = False,
                 notices: list[tuple[ErrorCode, str]] | None = None):
        self.engine = engine
        self.storage = storage
        self.controls = controls or Controls
        self.jobs: dict[int, Job] = {}
        self._queue: collections.deque[Job] = collections.deque()
        self._wakeup = asyncio.Event()
        self._next_id = 1
        self.current: Job | None = None
        self.last: Job | None = None
        self.listeners: list[Callable[[Status], None]] = []
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: box-level problems shown in Status while idle (e.g. a state file repaired at start)
        self.notices: list[tuple[ErrorCode, str]] = notices if notices is not None else []
        self.journal = Path(journal) if journal is not None else None
        self.rerun_interrupted = rerun_interrupted
        self._journal_warned = False
        if self.journal is not None:
            self._load_journal()

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

        def existing(input_kind: FileKind, name: str | None) -> Path:
            if name is None:
                raise StorageError(f"a {JobKind(kind).name.lower()} job needs a {input_kind.name.lower()} name",
                                   ErrorCode.BAD_NAME)
            return self.storage.existing(input_kind, name)

        try:
            inputs: dict[str, Path] = {}
            if kind in (JobKind.MIX, JobKind.ANALYZE):
                inputs["take"] = existing(FileKind.TAKE, take)
                inputs["backing"] = existing(FileKind.BACKING, backing)
            else:
                inputs["plan"] = existing(FileKind.PLAN, plan)
            out_kind = {JobKind.MIX: FileKind.MIX, JobKind.RENDER: FileKind.MIX, JobKind.ANALYZE: FileKind.PLAN,
                        JobKind.PREVIEW: FileKind.PREVIEW}[JobKind(kind)]
            output = self.storage.path(out_kind, out)
        except StorageError as exc:
            raise JobError(str(exc), exc.code) from None
        self._admit()
        controls = self.controls()
        job = Job(self._new_id(), JobKind(kind), inputs, output, controls.style.engine_name, controls.engine_sliders(),
                  (start_s or 0.0, duration_s) if kind == JobKind.PREVIEW else None)
        job.accept_alignment_guess = bool(accept_alignment_guess)
        self._enqueue(job)
        return job

    def rerun(self, job_id: int) -> Job:
        """Queue a job interrupted by a crash or power cut again, under a new id (ids never repeat).

        The new job has the old one's kind, inputs, output, style and sliders. Raises
        :class:`JobError` with NOT_FOUND for an id the box does not remember (or whose inputs are
        gone) and BAD_STATE for a job that was not interrupted or was already queued again.
        """
        old = self.jobs.get(job_id)
        if old is None:
            raise JobError(f"no job {job_id}; the box remembers jobs {_id_ranges(self.jobs) or 'none'}",
                           ErrorCode.NOT_FOUND)
        if not old.state.finished:
            raise JobError(f"job {job_id} is still {old.state.name.lower()}; nothing to re-run", ErrorCode.BAD_STATE)
        if old.error is not ErrorCode.INTERRUPTED:
            how = {JobState.DONE: "finished", JobState.CANCELLED: "was cancelled"}.get(
                old.state, f"failed ({old.error.name.lower()})")
            raise JobError(f"job {job_id} {how}: only an interrupted job is re-run (submit a new job instead)",
                           ErrorCode.BAD_STATE)
        if old.rerun_as:
            raise JobError(f"job {job_id} was already queued again as job {old.rerun_as}", ErrorCode.BAD_STATE)
        for role, path in old.inputs.items():
            if not path.is_file():
                raise JobError(f"the {role} {path.name} of job {job_id} is no longer on the box; upload it again",
                               ErrorCode.NOT_FOUND)
        self._admit()
        job = Job(self._new_id(), old.kind, dict(old.inputs), old.output, old.style, dict(old.sliders), old.window_s)
        job.accept_alignment_guess = old.accept_alignment_guess
        old.rerun_as = job.id
        old.detail = f"interrupted by a restart of the box; queued again as job {job.id}"
        self._enqueue(job)
        logger.info("job %d (interrupted) queued again as job %d", job_id, job.id)
        return job

    def _admit(self) -> None:
        """Refuse new work when the queue is full or free space is below the floor."""
        if len(self._queue) >= 255:
            raise JobError("255 jobs are already queued; wait for some to finish or cancel them", ErrorCode.BUSY)
        try:
            self.storage.check_floor()
        except StorageError as exc:
            raise JobError(str(exc), exc.code) from None

    def _enqueue(self, job: Job) -> None:
        self.jobs[job.id] = job
        self._queue.append(job)
        self._forget_old()
        self._save_journal()
        self._wakeup.set()
        self._notify()

    def _new_id(self) -> int:
        """The next job id: counting up across restarts (journaled), never one still remembered.

        Ids are 16-bit on the wire: after 65535 the count goes on at 1, skipping every id the box
        still remembers (queued, running, the last finished jobs), so an id names one job among
        all the box knows about and comes back only after 65,535 newer jobs.
        """
        for _ in range(MAX_JOB_ID):
            job_id = self._next_id
            self._next_id = job_id % MAX_JOB_ID + 1
            if job_id not in self.jobs:
                return job_id
        raise JobError("every job id is in use; wait for jobs to finish", ErrorCode.BUSY)

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

    def notice(self) -> tuple[ErrorCode, str] | None:
        """The box-level problem to show while idle: low space first, then start-up repairs."""
        with contextlib.suppress(OSError):
            if self.storage.below_floor():
                return ErrorCode.NO_SPACE, f"low space {self.storage.free_bytes() // (1024 * 1024)}MiB free"
        return self.notices[0] if self.notices else None

    def status(self) -> Status:
        """The Status message: the current (or last) job; while idle a box-level notice when there is one.

        A notice (``error`` NO_SPACE "low space ...", or a start-up repair) replaces ``error`` and
        ``stage`` only when no job runs and the last job did not fail (a failure keeps its own code).
        """
        job = self.current or self.last
        notice = self.notice() if self.current is None and (job is None or job.error is ErrorCode.OK) else None
        if job is None:
            if notice is not None:
                return Status(queued=min(255, len(self._queue)), error=notice[0], stage=notice[1])
            return Status(queued=len(self._queue))
        error, stage = notice if notice is not None else (job.error, job.stage)
        return Status(
            state=DeviceState.BUSY if self.current is not None else DeviceState.IDLE,
            job_id=job.id, job_kind=job.kind, job_state=job.state,
            progress=min(1.0, max(0.0, job.progress)), queued=min(255, len(self._queue)),
            error=error, stage=stage,
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
            self._save_journal()
            self._notify()
            try:
                job.report = await asyncio.to_thread(self._call_engine, job)
            except asyncio.CancelledError:
                job.cancel_requested.set()
                self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "box shutting down")
                self._save_journal(requeue=job)  # nobody cancelled it: the box's next start runs it again
                raise
            except JobCancelled:
                self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "cancelled")
            except Exception as exc:
                if job.cancel_requested.is_set():
                    self._finish(job, JobState.CANCELLED, ErrorCode.CANCELLED, "cancelled")
                elif is_no_space(exc):  # the disk filled up while the job wrote: say so, not INTERNAL
                    logger.warning("job %d failed: out of space (%s)", job.id, exc)
                    self._finish(job, JobState.FAILED, ErrorCode.NO_SPACE,
                                 "the box's storage is full; delete old mixes or previews and run it again")
                elif isinstance(exc, MelismaError):
                    logger.warning("job %d failed: %s", job.id, exc)
                    # An unknown offset gets its own code, so the app can offer to accept the guess.
                    code = ErrorCode.ALIGNMENT_UNKNOWN if isinstance(exc, AlignmentUnknownError) else ErrorCode.ENGINE_FAILED
                    self._finish(job, JobState.FAILED, code, str(exc))
                else:  # an engine bug must not kill the queue
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
        if job.accept_alignment_guess and job.kind in (JobKind.MIX, JobKind.ANALYZE):
            kw["accept_alignment_guess"] = True  # only when asked: engines without the option keep working
        if job.kind is JobKind.MIX:
            return self.engine.mix(job.inputs["take"], job.inputs["backing"], job.output, **kw)
        if job.kind is JobKind.ANALYZE:
            return self.engine.analyze(job.inputs["take"], job.inputs["backing"], job.output, **kw)
        if job.kind is JobKind.RENDER:
            return self.engine.render(job.inputs["plan"], job.output, **kw)
        if job.window_s is None:  # only a damaged journal record can lack it
            raise JobError(f"preview job {job.id} has no start and duration; submit the preview again",
                           ErrorCode.MALFORMED)
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
        self._save_journal()
        self._notify()

    def _forget_old(self) -> None:
        finished = [j for j in self.jobs.values() if j.state.finished]
        for job in finished[:-FINISHED_JOBS_KEPT]:
            del self.jobs[job.id]

    # -- journal --------------------------------------------------------------------------------

    def _save_journal(self, *, requeue: Job | None = None) -> None:
        """Write every queued, running and remembered job to the journal (atomically); ``requeue`` is
        written as queued (a job the box's own shutdown stopped: it runs again at the next start).
        """
        if self.journal is None:
            return
        from ..audio_io import atomic_write_text

        root = self.storage.root
        jobs = []
        for job in sorted(self.jobs.values(), key=lambda j: j.id):
            record = job.to_json(root)
            if job is requeue:
                record.update(state=JobState.QUEUED.name, error=ErrorCode.OK.name, detail="", stage="", progress=0.0)
            jobs.append(record)
        record = {"format": JOURNAL_FORMAT, "version": 1, "next_id": self._next_id,
                  "last": self.last.id if self.last is not None and self.last is not requeue else 0, "jobs": jobs}
        try:
            atomic_write_text(self.journal, json.dumps(record), overwrite=True)
        except OSError as exc:  # a full disk must not stop the queue; the journal catches up later
            if not self._journal_warned:
                logger.warning("cannot write the job journal %s: %s", self.journal, exc.strerror)
                self._journal_warned = True
        else:
            self._journal_warned = False

    def _load_journal(self) -> None:
        """Take the jobs back after a restart: queued jobs wait again, a job that was running when
        the box died is failed INTERRUPTED (its work files removed; re-queued if so configured).
        """
        from .repair import move_aside

        path = self.journal
        if path is None or not path.exists():
            return
        text = ""
        try:
            text = path.read_text(encoding="utf-8")
            record = json.loads(text)
            if not isinstance(record, dict) or record.get("format") != JOURNAL_FORMAT:
                raise ValueError("not a job journal")
            jobs = [Job.from_json(d, self.storage.root) for d in record["jobs"]]
            next_id = int(record.get("next_id", 1))
            last_id = int(record.get("last", 0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = move_aside(path)
            # the counter is written first, so a cut-off journal usually still has it (ids wrap:
            # the highest id is not always the newest); else go on after the highest readable id
            counter = re.search(r'"next_id":\s*(\d+)', text)
            ids = [int(m) for m in re.findall(r'"id":\s*(\d+)', text) if 0 < int(m) <= MAX_JOB_ID]
            if counter and 1 <= int(counter.group(1)) <= MAX_JOB_ID:
                self._next_id = int(counter.group(1))
            else:
                self._next_id = max(ids, default=0) % MAX_JOB_ID + 1
            message = f"job journal {path.name} was damaged ({exc}); moved to {aside.name}, its jobs are lost"
            logger.error("%s", message)
            self.notices.append((ErrorCode.INTERNAL, "jobs.json damaged"))
            return
        self._next_id = next_id if 1 <= next_id <= MAX_JOB_ID else 1
        interrupted = []
        for job in jobs:
            self.jobs[job.id] = job
            if job.state is JobState.QUEUED:
                self._queue.append(job)
            elif job.state is JobState.RUNNING:
                job.state, job.error = JobState.FAILED, ErrorCode.INTERRUPTED
                job.detail = "interrupted by a restart of the box (crash or power cut); run it again"
                job.done.set()
                self._remove_work_files(job)
                interrupted.append(job)
        self.last = self.jobs.get(last_id)
        for job in interrupted:
            logger.warning("job %d (%s into %s) was interrupted by a restart of the box", job.id, job.kind.name.lower(),
                           job.output.name)
            self.last = job
            if self.rerun_interrupted:
                try:
                    again = self.rerun(job.id)
                except JobError as exc:  # e.g. an input deleted meanwhile, or no space: it stays failed
                    logger.warning("job %d is not queued again: %s", job.id, exc)
                else:
                    job.detail = f"interrupted by a restart of the box; re-queued as job {again.id}"
        if self._queue:
            self._wakeup.set()
        self._save_journal()

    def _remove_work_files(self, job: Job) -> None:
        """What an interrupted job leaves: temporary outputs and work folders beside its output,
        and the cache folder of a plan that was never completed.
        """
        from ..leftovers import sweep

        sweep(job.output.parent)
        if job.kind is JobKind.ANALYZE and not job.output.exists():
            shutil.rmtree(job.output.with_name(job.output.name + ".cache"), ignore_errors=True)
