"""The app's steps as coroutines on the one asyncio loop Kivy and bleak share.

The screens call the plain methods (``tap_*``, ``slider_released``...), which schedule a task with
:meth:`Companion.spawn` and return at once; the tasks talk to the box through
:class:`~melisma_companion.client.MelismaClient` and write what happened into the
:mod:`~melisma_companion.app.state` objects the screens observe. Every step is logged at INFO on
standard error. A failure becomes one sentence on the status line (:func:`words.error_message`).

Resilience: transfers resume after a dropped link (the client resumes from the box's offset, or
from the ``.part`` file); a mix is two jobs on the box (analyze, render) that run whether the app
is connected or not; the app writes what it is waiting for into ``app.json`` and picks it up
again after a reconnect or a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from melisma import protocol as p

from ..client import BoxError, FoundBox, JobFailedError, LinkLostError, NotPairedError
from . import words
from .links import AppClient
from .state import AppState
from .words import AppError

logger = logging.getLogger("melisma_companion.app")

#: Preview length in seconds: short enough to render, send and start within 1.5 s on a phone link
#: (see tools/bench_preview.py and companion/docs/app.md), long enough to hear a change.
PREVIEW_S = 2.5
#: Preview file on the box: Opus in Ogg, which the box encodes at 48 kbit/s (~6 kB per second of audio).
PREVIEW_NAME = "preview.ogg"
#: Mix format: MP3 plays on every phone and in the app on a desktop (SDL_mixer).
MIX_EXTENSION = ".mp3"
#: Share of the mix's progress bar taken by the analysis (the rest is the render).
ANALYZE_SHARE = 0.75
#: How long the app keeps trying to reach a box that dropped the link.
RECONNECT_ATTEMPTS = 30


class Player:
    """What the controller needs to play audio; the Kivy app gives one backed by SoundLoader."""

    def play(self, path: Path) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def playing(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


def box_name(local_name: str, kind: p.FileKind) -> str:
    """A file name the box accepts, made from a phone file's name (``My Take (2).m4a`` -> ``My-Take-2.m4a``)."""
    stem, dot, ext = local_name.rpartition(".")
    if not dot:
        stem, ext = local_name, ""
    ext = "." + ext.lower() if ext else ""
    if ext not in kind.extensions:
        raise AppError(f"{local_name} is not an audio file the box can read; choose an m4a, mp3, wav, flac, ogg, "
                       "opus, aac or amr file.")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or kind.name.lower()
    return p.check_name(stem[: p.MAX_NAME_LENGTH - len(ext)] + ext, kind)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def copy_new(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` atomically; never overwrite an existing file."""
    if dest.exists():
        raise AppError(f"{dest.name} already exists in {dest.parent}; choose another name.")
    if not dest.parent.is_dir():
        raise AppError(f"The folder {dest.parent} does not exist; choose another place.")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix="." + dest.name, suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.link(tmp, dest)  # fails if dest appeared meanwhile: nothing is overwritten
    except FileExistsError:
        raise AppError(f"{dest.name} already exists in {dest.parent}; choose another name.") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return dest


class Companion:
    """The app's behaviour, with no Kivy in it."""

    def __init__(self, state: AppState, link: Any, data_dir: Path, *, player: Player | None = None,
                 scan_timeout_s: float = 3.0, request_timeout_s: float = 30.0):
        self.state = state
        self.link = link
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir = self.data_dir / "downloads"
        self.cache_dir.mkdir(exist_ok=True)
        self.player = player
        self.scan_timeout_s = scan_timeout_s
        self.request_timeout_s = request_timeout_s
        self.client: AppClient | None = None
        self.settings = self._load_settings()
        self.tasks: set[asyncio.Task] = set()
        self._reconnect_lock = asyncio.Lock()
        self._passkey: asyncio.Future | None = None
        self._preview_wanted = False
        self._preview_task: asyncio.Task | None = None
        self._mix_task: asyncio.Task | None = None
        self._transfer_active = False
        self._preview_count = 0
        link.passkey_provider = self._ask_passkey
        self.state.job.style = p.Style(self.settings.get("style", int(p.Style.CPOP)))
        sliders = self.settings.get("sliders") or {}
        self.state.shape.sliders.update({k: float(v) for k, v in sliders.items() if k in p.SLIDER_NAMES})

    # -- settings ---------------------------------------------------------------------------------

    @property
    def settings_path(self) -> Path:
        return self.data_dir / "app.json"

    def _load_settings(self) -> dict[str, Any]:
        try:
            data = json.loads(self.settings_path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def save_settings(self) -> None:
        _atomic_write(self.settings_path, json.dumps(self.settings, indent=1))

    # -- tasks ----------------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], what: str) -> asyncio.Task:
        """Schedule ``coro`` on the running loop; a failure becomes a sentence on the status line."""
        task = asyncio.ensure_future(self._guard(coro, what))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _guard(self, coro: Awaitable[Any], what: str) -> Any:
        try:
            return await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = words.error_message(exc)
            logger.info("%s failed: %s (%s: %s)", what, message, type(exc).__name__, exc)
            logger.debug("details", exc_info=True)
            self.state.status.say(message, error=True)
            return None

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(BaseException):
                await task
        if self.client is not None:
            await self.client.disconnect()
        if self.player is not None:
            self.player.stop()

    # -- start, scan, connect -------------------------------------------------------------------

    async def start(self) -> None:
        """Reconnect to the bonded box from last time, or scan for boxes."""
        known = self.settings.get("box")
        if known:
            logger.info("reconnecting to %s (%s), bonded last time", known.get("name"), known.get("address"))
            self.state.status.say(f"Reconnecting to {known.get('name')}…")
            try:
                await self.connect(known["address"], known.get("name") or "")
                return
            except (LinkLostError, BoxError) as exc:
                logger.info("%s is not reachable (%s); scanning instead", known.get("name"), exc)
        await self.scan()

    async def scan(self) -> list[FoundBox]:
        link = self.state.link
        link.update(phase="scanning", message="Looking for Melisma boxes…", boxes=[])
        logger.info("scanning for Melisma boxes (%.0f s)", self.scan_timeout_s)
        boxes = await self.link.scan(self.scan_timeout_s)
        for box in boxes:
            logger.info("found %s at %s (RSSI %d dBm)", self.name_of(box), box.address, box.rssi)
        message = ("Tap your box to connect." if boxes else
                   "No box found. Switch the box on, keep it near, and tap Scan again.")
        link.update(phase="idle", boxes=boxes, message=message)
        return boxes

    @staticmethod
    def name_of(box: FoundBox) -> str:
        # The name comes in the scan response; a stack that has not seen it yet gets the
        # protocol's name for that address (Melisma-XXXX, the last four hex digits).
        return box.name or p.advertised_name(box.address)

    async def connect(self, device: Any, name: str = "") -> None:
        """Connect, check the protocol version (before pairing), and go on to pairing or the library."""
        link = self.state.link
        address = device.address if hasattr(device, "address") else str(device)
        name = name or p.advertised_name(address)
        link.update(phase="connecting", box_name=name, box_address=address, message=f"Connecting to {name}…")
        if self.client is not None:
            await self.client.disconnect()
        self.client = self.link.client(device, on_lost=self._on_lost, request_timeout_s=self.request_timeout_s)
        try:
            await self.client.connect()
        except p.IncompatibleVersionError as exc:
            message = words.error_message(exc)
            logger.info("%s speaks another protocol version: %s", name, exc)
            link.update(phase="idle", message=message)
            self.client = None
            raise AppError(message) from None
        except Exception:
            link.update(phase="idle", message="")
            self.client = None
            raise
        version = self.client.box_version
        logger.info("connected to %s at %s, protocol %d.%d, firmware %s", name, address, version[0], version[1],
                    self.client.firmware)
        link.update(box_version=version, bonded=self.client.bonded)
        if self.client.bonded:
            await self._ready()
        else:
            link.update(phase="pairing", message="Press the pair button on your box (or run `melisma-device pair` "
                                                 "on it), then tap Pair.")
            self.state.status.say(f"Connected to {name}. Pair it to continue.")

    def tap_box(self, box: FoundBox) -> None:
        self.spawn(self.connect(box.device, self.name_of(box)), "connecting")

    def tap_scan(self) -> None:
        self.spawn(self.scan(), "scanning")

    # -- pairing ----------------------------------------------------------------------------------

    async def _ask_passkey(self) -> int | None:
        """The box shows a passkey: ask the singer for it (the pair screen's passkey field)."""
        self._passkey = asyncio.get_running_loop().create_future()
        self.state.link.update(passkey_wanted=True, message="Type the 6-digit passkey the box shows.")
        logger.info("the box asks for a passkey")
        try:
            return await self._passkey
        finally:
            self._passkey = None
            self.state.link.update(passkey_wanted=False)

    def submit_passkey(self, text: str) -> None:
        digits = text.strip()
        if not re.fullmatch(r"\d{1,6}", digits):
            self.state.link.update(message="The passkey is the 6-digit number on the box; type only digits.")
            return
        if self._passkey is not None and not self._passkey.done():
            self._passkey.set_result(int(digits))

    async def pair(self) -> None:
        link = self.state.link
        if self.client is None or not self.client.is_connected:
            raise AppError("Not connected to a box; tap your box on the first screen.")
        link.update(pairing=True, message="Pairing… (if the box shows a passkey, type it in)")
        logger.info("pairing with %s", link.box_name)
        try:
            await self.client.pair()
        except NotPairedError as exc:
            message = words.pairing_message(exc)
            logger.info("pairing with %s failed: %s", link.box_name, message)
            link.update(pairing=False, message=message)
            if self.client is not None and not self.client.is_connected:
                await self.client.reconnect()
            return
        link.update(pairing=False, bonded=True)
        logger.info("paired and bonded with %s", link.box_name)
        await self._ready()

    def tap_pair(self) -> None:
        self.spawn(self.pair(), "pairing")

    async def _ready(self) -> None:
        link = self.state.link
        self.settings["box"] = {"address": link.box_address, "name": link.box_name}
        self.save_settings()
        link.update(phase="ready", bonded=True, message=f"Connected to {link.box_name}.")
        self.state.status.say(f"Connected to {link.box_name} (protocol "
                              f"{link.box_version[0]}.{link.box_version[1]}).")
        await self.refresh_library()
        if self.client.controls is not None and not self.settings.get("sliders"):
            self.state.shape.update(sliders=dict(self.client.controls.sliders))
        await self._resume_after_connect()

    async def _resume_after_connect(self) -> None:
        job = self.settings.get("job")
        if job and job.get("step") == "analyse":
            job["step"] = "analyze"  # an app.json written before the spelling settled on "analyze"
        if job and job.get("step") not in (None, "done") and (self._mix_task is None or self._mix_task.done()):
            logger.info("picking up the mix of %s on the box (step %s)", job["take"], job["step"])
            self.state.status.say("Picking up your mix where the box is…")
            self._mix_task = self.spawn(self._drive_mix(), "mixing")
        elif job and job.get("step") == "done" and self.state.result.plan is None:
            self.spawn(self.fetch_plan(), "downloading the plan")

    # -- link loss --------------------------------------------------------------------------------

    def _on_lost(self) -> None:
        logger.info("the link to %s dropped", self.state.link.box_name)
        self.state.link.update(phase="reconnecting", message="Lost the box; reconnecting…")
        if not self._transfer_active and (self._mix_task is None or self._mix_task.done()):
            self.spawn(self.reconnect(), "reconnecting")

    async def reconnect(self) -> None:
        """Connect again (sharing one attempt between everyone who lost the link)."""
        async with self._reconnect_lock:
            if self.client is None or self.client.is_connected:
                return
            link = self.state.link
            link.update(phase="reconnecting", message=f"Lost {link.box_name}; reconnecting…")
            last: Exception | None = None
            for attempt in range(RECONNECT_ATTEMPTS):
                try:
                    await self.client.connect()
                    break
                except (LinkLostError, BoxError) as exc:
                    last = exc
                    await asyncio.sleep(min(2.0, 0.2 * (attempt + 1)))
            else:
                link.update(phase="lost", message="Cannot reach the box. Is it on and near you? Tap Scan.")
                raise LinkLostError(f"could not reconnect: {last}", p.ErrorCode.BAD_STATE)
            logger.info("reconnected to %s", link.box_name)
            link.update(phase="ready", bonded=self.client.bonded, message=f"Connected to {link.box_name}.")
            self.state.status.say(f"Reconnected to {link.box_name}.")

    def _require_ready(self) -> AppClient:
        if self.client is None or not self.state.link.bonded:
            raise AppError("Connect to your box and pair it first.")
        return self.client

    async def _with_reconnect(self, make: Callable[[], Awaitable[Any]], what: str) -> Any:
        """Run a request; after a dropped link, reconnect and run it again (transfers resume)."""
        for _attempt in range(4):
            try:
                if self.client is not None and not self.client.is_connected:
                    await self.reconnect()
                return await make()
            except LinkLostError:
                logger.info("%s interrupted by a dropped link; reconnecting to go on", what)
                await self.reconnect()
        return await make()

    # -- library and uploads --------------------------------------------------------------------

    async def refresh_library(self) -> list[p.LibraryEntry]:
        client = self._require_ready()
        entries = await self._with_reconnect(client.list_library, "listing the library")
        lib = self.state.library
        changes: dict[str, Any] = {"entries": entries}
        takes, backings = lib_names(entries, p.FileKind.TAKE), lib_names(entries, p.FileKind.BACKING)
        if lib.take not in takes:
            changes["take"] = takes[0] if len(takes) == 1 else ""
        if lib.backing not in backings:
            changes["backing"] = backings[0] if len(backings) == 1 else ""
        lib.update(**changes)
        logger.info("library: %d takes, %d backings, %d mixes", len(takes), len(backings),
                    len(lib_names(entries, p.FileKind.MIX)))
        return entries

    async def upload(self, path: str | os.PathLike, kind: p.FileKind) -> str:
        """Send a take or backing (skipped when the box already has the same bytes); returns its box name."""
        client = self._require_ready()
        path = Path(path)
        name = box_name(path.name, kind)
        lib = self.state.library
        data = await asyncio.to_thread(path.read_bytes)
        digest = hashlib.sha256(data).digest()
        same = [e for e in lib.entries if e.kind is kind and e.sha256 == digest]
        if same:
            logger.info("%s %s is already on the box as %s; not sent again", kind.name.lower(), path.name,
                        same[0].name)
            lib.update(**{kind.name.lower(): same[0].name}, message=f"{path.name} is already on the box.")
            self.state.status.say(f"{path.name} is already on the box; not sent again.")
            return same[0].name
        lib.update(uploading=path.name, upload_done=0, upload_total=len(data), upload_resumed_from=0,
                   message=f"Sending {path.name}…")
        logger.info("uploading %s %s as %s (%d bytes)", kind.name.lower(), path.name, name, len(data))
        first = [True]

        def progress(done: int, total: int) -> None:
            if first[0]:
                first[0] = False
                if done:
                    lib.update(upload_resumed_from=done)
                    logger.info("upload of %s resumes at byte %d", name, done)
            lib.update(upload_done=done, upload_total=total)

        async def once() -> Any:
            first[0] = True
            return await client.upload(path, kind, name, progress=progress, retries=0)

        self._transfer_active = True
        try:
            await self._with_reconnect(once, f"uploading {name}")
        finally:
            self._transfer_active = False
            lib.update(uploading="")
        logger.info("uploaded %s (%d bytes)", name, len(data))
        lib.update(message=f"{path.name} is on the box.")
        self.state.status.say(f"Sent {path.name} to the box.")
        await self.refresh_library()
        lib.update(**{kind.name.lower(): name})
        return name

    def pick_file(self, path: str, kind: p.FileKind) -> None:
        self.spawn(self.upload(path, kind), f"sending {Path(path).name}")

    async def delete(self, entry: p.LibraryEntry) -> None:
        client = self._require_ready()
        await self._with_reconnect(lambda: client.delete(entry.kind, entry.name), f"deleting {entry.name}")
        logger.info("deleted %s %s from the box", entry.kind.name.lower(), entry.name)
        self.state.status.say(f"Deleted {entry.name} from the box.")
        await self.refresh_library()

    def tap_delete(self, entry: p.LibraryEntry) -> None:
        self.spawn(self.delete(entry), f"deleting {entry.name}")

    def choose(self, entry: p.LibraryEntry) -> None:
        if entry.kind in (p.FileKind.TAKE, p.FileKind.BACKING):
            self.state.library.update(**{entry.kind.name.lower(): entry.name})

    # -- the mix --------------------------------------------------------------------------------

    def tap_style(self, style: p.Style) -> None:
        self.state.job.update(style=p.Style(style))
        self.settings["style"] = int(style)
        self.save_settings()

    def tap_mix(self) -> None:
        if self._mix_task is not None and not self._mix_task.done():
            self.state.status.say("A mix is already running.")
            return
        lib = self.state.library
        try:
            if not lib.take or not lib.backing:
                raise AppError("Choose a take and a backing first (send them from your phone or pick them in the "
                               "library).")
            self._require_ready()
        except AppError as exc:
            self.state.status.say(str(exc), error=True)
            return
        stem = lib.take.rpartition(".")[0] or lib.take
        self.settings["job"] = {"take": lib.take, "backing": lib.backing, "plan": f"{stem}.json",
                                "mix": f"{stem}-mix{MIX_EXTENSION}", "step": "start", "job_id": 0,
                                "style": int(self.state.job.style)}
        self.save_settings()
        self.state.result.update(plan=None, summary=[])
        self.state.keep.update(local_path="", saved_path="", done=0, total=0)
        self._mix_task = self.spawn(self._drive_mix(), "mixing")

    async def _controls(self) -> p.Controls:
        return p.Controls(self.state.job.style, dict(self.state.shape.sliders))

    async def _drive_mix(self) -> None:
        job_state = self.state.job
        job = self.settings["job"]
        job_state.update(running=True, done=False, plan_name=job["plan"], mix_name=job["mix"],
                         message="Mixing on the box…")
        try:
            while job["step"] != "done":
                try:
                    await self._mix_step(job)
                except LinkLostError:
                    job_state.update(message="Lost the box; the mix goes on there. Reconnecting…")
                    logger.info("link dropped during the mix (step %s); the job goes on on the box", job["step"])
                    await self.reconnect()
                self.save_settings()
        except JobFailedError as exc:
            cancelled = exc.code is p.ErrorCode.CANCELLED
            logger.info("mix %s: %s", "cancelled" if cancelled else "failed", exc)
            self.settings.pop("job", None)
            self.save_settings()
            job_state.update(running=False, step="", job_id=0, progress=0.0,
                             message="Mix cancelled." if cancelled else words.error_message(exc))
            self.state.status.say("Mix cancelled." if cancelled else words.error_message(exc), error=not cancelled)
            return
        except BaseException:
            job_state.update(running=False)
            raise
        job_state.update(running=False, done=True, step="", stage="done", progress=1.0, message="Your mix is ready.")
        self.settings["mixed_with"] = self.settings["job"]["controls"]
        self.save_settings()
        self.state.status.say("Your mix is ready. Shape it, see your pitch, or keep it.")
        await self.refresh_library()

    def _job_progress(self, step: str) -> Callable[[str, float], None]:
        lo, hi = (0.0, ANALYZE_SHARE) if step == "analyze" else (ANALYZE_SHARE, 1.0)
        last = [""]

        def progress(stage: str, fraction: float) -> None:
            self.state.job.update(step=step, stage=stage, progress=lo + (hi - lo) * fraction)
            if stage != last[0]:
                last[0] = stage
                logger.info("job %s: %s (%.0f %%)", step, stage or "starting", 100 * (lo + (hi - lo) * fraction))
        return progress

    async def _mix_step(self, job: dict[str, Any]) -> None:
        """One step of the mix, decided from what the box says (so it can be repeated after a drop)."""
        client = self._require_ready()
        step = job["step"]
        if step == "start":
            for kind, name in ((p.FileKind.PLAN, job["plan"]), (p.FileKind.MIX, job["mix"])):
                if name in self.state.library.names(kind):
                    with contextlib.suppress(BoxError):
                        await client.delete(kind, name)  # an older plan or mix of this take
            controls = await self._controls()
            await client.set_controls(controls)
            job["controls"] = {"style": int(controls.style), "sliders": controls.sliders}
            job["job_id"] = await client.analyze(job["take"], job["backing"], job["plan"])
            job["step"] = "analyze"
            logger.info("mix started: analysing %s over %s (job %d, style %s)", job["take"], job["backing"],
                        job["job_id"], controls.style.engine_name)
        elif step in ("analyze", "render"):
            self.state.job.update(job_id=job["job_id"], step=step)
            output_kind, output = (p.FileKind.PLAN, job["plan"]) if step == "analyze" else (p.FileKind.MIX, job["mix"])
            status = client.status or await client.read_status()
            if status.job_id != job["job_id"]:
                # the box has moved on (or restarted): what matters is whether the output exists
                names = lib_names(await client.list_library(output_kind), output_kind)
                if output not in names:
                    logger.info("the box no longer knows job %d; starting the %s again", job["job_id"], step)
                    job["job_id"] = await (client.analyze(job["take"], job["backing"], job["plan"]) if step == "analyze"
                                           else client.render(job["plan"], job["mix"]))
                    return
            else:
                await client.wait_for_job(job["job_id"], progress=self._job_progress(step))
            logger.info("job %s done: %s", step, output)
            if step == "analyze":
                controls = job["controls"]
                await client.set_controls(p.Controls(controls["style"], controls["sliders"]))
                job["job_id"] = await client.render(job["plan"], job["mix"])
                job["step"] = "render"
                logger.info("rendering the mix %s (job %d)", job["mix"], job["job_id"])
            else:
                job["step"] = "fetch"
        elif step == "fetch":
            self.state.job.update(step="fetch", stage="", message="Fetching the plan…")
            await self.fetch_plan()
            job["step"] = "done"

    async def cancel(self) -> None:
        client = self._require_ready()
        job_id = self.state.job.job_id
        if not self.state.job.running or not job_id:
            raise AppError("There is no mix running to cancel.")
        logger.info("cancelling job %d", job_id)
        await client.cancel(job_id)

    def tap_cancel(self) -> None:
        self.spawn(self.cancel(), "cancelling")

    # -- the plan (result screen) ---------------------------------------------------------------

    async def fetch_plan(self) -> dict[str, Any]:
        client = self._require_ready()
        job = self.settings.get("job") or {}
        name = job.get("plan") or self.state.job.plan_name
        dest = self.cache_dir / name
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()  # a plan from an earlier mix of this take
        logger.info("downloading the plan %s", name)
        await self._with_reconnect(lambda: client.download(p.FileKind.PLAN, name, dest, retries=0),
                                   f"downloading {name}")
        plan = json.loads(dest.read_text(encoding="utf-8"))
        logger.info("downloaded the plan %s (%d bytes, %d notes)", name, dest.stat().st_size,
                    len((plan.get("pitch") or {}).get("notes") or []))
        duration = float(((plan.get("inputs") or {}).get("take") or {}).get("duration_s") or 0.0)
        self.state.shape.update(duration_s=duration, playhead_s=min(self.state.shape.playhead_s, duration))
        report = await self.fetch_render_report(name)
        self.state.result.update(plan=plan, report=report, summary=words.plan_summary(plan, report=report))
        return plan

    async def fetch_render_report(self, plan_name: str) -> dict[str, Any] | None:
        """The report of the plan's latest render, which the box keeps beside the plan
        (``<plan>.report.json``, a plan-kind file): it holds the written mix's measured loudness.
        None when the box has none (a box from before it kept them, or the render not done yet).
        """
        client = self._require_ready()
        name = p.render_report_name(plan_name)
        dest = self.cache_dir / name
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()  # a report from an earlier mix of this take
        try:
            await self._with_reconnect(lambda: client.download(p.FileKind.PLAN, name, dest, retries=0),
                                       f"downloading {name}")
        except BoxError as exc:
            if exc.code not in (p.ErrorCode.NOT_FOUND, p.ErrorCode.BAD_NAME):
                raise
            logger.info("the box keeps no render report %s (%s); showing the target loudness", name, exc.code.name)
            return None
        try:
            report = json.loads(dest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.warning("the render report %s cannot be read (%s); showing the target loudness", name, exc)
            return None
        logger.info("downloaded the render report %s: %s", name, (report.get("loudness") or {}))
        return report if isinstance(report, dict) else None

    # -- sliders and preview --------------------------------------------------------------------

    def slider_moved(self, name: str, value: float) -> None:
        value = max(-1.0, min(1.0, round(float(value), 2)))
        sliders = dict(self.state.shape.sliders)
        sliders[name] = value
        self.state.shape.update(sliders=sliders)

    def slider_released(self, name: str, value: float) -> None:
        """A slider was let go: keep its value and play a preview around the playhead."""
        self.slider_moved(name, value)
        self.settings["sliders"] = dict(self.state.shape.sliders)
        self.save_settings()
        logger.info("slider %s released at %+.2f", name, self.state.shape.sliders[name])
        self.request_preview()

    def set_playhead(self, seconds: float) -> None:
        self.state.shape.update(playhead_s=max(0.0, float(seconds)))

    def request_preview(self) -> None:
        self._preview_wanted = True
        if self._preview_task is None or self._preview_task.done():
            self._preview_task = self.spawn(self._preview_loop(), "previewing")

    async def _preview_loop(self) -> None:
        while self._preview_wanted:
            self._preview_wanted = False
            try:
                await self.preview()
            except Exception:
                self.state.shape.update(preview="failed")
                raise

    async def preview(self) -> dict[str, float]:
        """Render a short preview on the box, fetch it and start playing it; returns the time of each part."""
        client = self._require_ready()
        shape = self.state.shape
        job = self.settings.get("job") or {}
        if job.get("step") != "done":
            raise AppError("Make a mix first; the preview plays your take with the new settings.")
        plan = job["plan"]
        start = max(0.0, min(shape.playhead_s, max(0.0, shape.duration_s - PREVIEW_S)))
        t0 = time.perf_counter()
        shape.update(preview="rendering", message="Rendering a preview on the box…")
        await client.set_controls(await self._controls())
        t1 = time.perf_counter()
        job_id = await client.preview(plan, PREVIEW_NAME, start_s=start, duration_s=PREVIEW_S)
        await client.wait_for_job(job_id, timeout_s=60)
        t2 = time.perf_counter()
        shape.update(preview="downloading", message="Fetching the preview…")
        self._preview_count += 1
        dest = self.cache_dir / f"preview-{self._preview_count % 2}.ogg"
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        await client.download(p.FileKind.PREVIEW, PREVIEW_NAME, dest, retries=0)
        t3 = time.perf_counter()
        playing = self.player.play(dest) if self.player is not None else False
        t4 = time.perf_counter()
        timings = {"controls_s": t1 - t0, "render_s": t2 - t1, "transfer_s": t3 - t2, "start_s": t4 - t3,
                   "total_s": t4 - t0, "bytes": float(dest.stat().st_size)}
        logger.info("preview from %.1f s: controls %.0f ms, render on the box %.0f ms, transfer %.0f ms "
                    "(%d bytes), start playing %.0f ms, total %.0f ms", start, 1000 * timings["controls_s"],
                    1000 * timings["render_s"], 1000 * timings["transfer_s"], dest.stat().st_size,
                    1000 * timings["start_s"], 1000 * timings["total_s"])
        shape.update(preview="playing" if playing else "failed", timings=timings,
                     previews_played=shape.previews_played + (1 if playing else 0),
                     message=(f"Playing a {PREVIEW_S:.1f} s preview from {words.time_words(start)} "
                              f"(ready in {timings['total_s']:.1f} s)." if playing else
                              "The preview could not be played on this device."))
        return timings

    # -- keep: download, save, play ---------------------------------------------------------------

    async def download_mix(self) -> Path:
        """Bring the mix to the phone (rendered again first if the sliders changed since)."""
        client = self._require_ready()
        job = self.settings.get("job") or {}
        if job.get("step") != "done":
            raise AppError("Make a mix first.")
        keep = self.state.keep
        controls = await self._controls()
        wanted = {"style": int(controls.style), "sliders": controls.sliders}
        if self.settings.get("mixed_with") != wanted:
            keep.update(message="Updating the mix with your slider settings…", downloading=True)
            logger.info("rendering the mix again with the new slider settings")
            await client.set_controls(controls)
            job_id = await client.render(job["plan"], job["mix"])
            await client.wait_for_job(job_id, timeout_s=600)
            self.settings["mixed_with"] = wanted
            self.save_settings()
        dest = self.cache_dir / job["mix"]
        keep.update(downloading=True, done=0, total=0, resumed_from=0, message="Downloading the mix…")
        logger.info("downloading the mix %s", job["mix"])
        first = [True]

        def progress(done: int, total: int) -> None:
            if first[0]:
                first[0] = False
                if done:
                    keep.update(resumed_from=done)
                    logger.info("download of %s resumes at byte %d", job["mix"], done)
            keep.update(done=done, total=total)

        async def once() -> Path:
            first[0] = True
            if dest.exists():
                dest.unlink()  # an older download; a .part of this one is resumed
            return await client.download(p.FileKind.MIX, job["mix"], dest, progress=progress, retries=0)

        self._transfer_active = True
        try:
            await self._with_reconnect(once, f"downloading {job['mix']}")
        finally:
            self._transfer_active = False
            keep.update(downloading=False)
        logger.info("downloaded the mix %s (%d bytes)", dest.name, dest.stat().st_size)
        size = words.size_words(dest.stat().st_size)
        keep.update(local_path=str(dest), message=f"The mix is on this device ({size}).")
        self.state.status.say("Downloaded your mix.")
        return dest

    def tap_download(self) -> None:
        self.spawn(self.download_mix(), "downloading the mix")

    def save_as(self, dest: str | os.PathLike) -> Path:
        keep = self.state.keep
        if not keep.local_path:
            raise AppError("Download the mix first.")
        dest = Path(dest)
        if dest.suffix.lower() != MIX_EXTENSION:
            dest = dest.with_name(dest.name + MIX_EXTENSION)
        copy_new(Path(keep.local_path), dest)
        logger.info("saved the mix as %s", dest)
        keep.update(saved_path=str(dest), message=f"Saved as {dest}.")
        self.state.status.say(f"Saved your mix as {dest.name}.")
        return dest

    def tap_save_as(self, dest: str) -> None:
        try:
            self.save_as(dest)
        except (AppError, OSError) as exc:
            self.state.keep.update(message=words.error_message(exc))
            self.state.status.say(words.error_message(exc), error=True)

    def tap_play(self) -> None:
        keep = self.state.keep
        if self.player is None or not keep.local_path:
            self.state.status.say("Download the mix first.", error=True)
            return
        if keep.playing:
            self.player.stop()
            keep.update(playing=False, message="Stopped.")
            return
        ok = self.player.play(Path(keep.local_path))
        logger.info("playing the mix %s: %s", keep.local_path, "started" if ok else "could not start")
        keep.update(playing=ok, message="Playing your mix." if ok else "This device cannot play the mix.")


def lib_names(entries: list[p.LibraryEntry], kind: p.FileKind) -> list[str]:
    return [e.name for e in entries if e.kind is kind]
