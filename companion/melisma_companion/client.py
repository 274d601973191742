"""The companion's link to a Melisma box, built on bleak (``BleakScanner``, ``BleakClient``).

This is the code the Kivy app calls; it needs no Kivy. It speaks the protocol in
:mod:`melisma.protocol` (the only firmware module the app imports) and works on any bleak backend:
the phone's own (Android, iOS via CoreBluetooth, BlueZ on Linux) or, in tests and the benchmark,
:mod:`melisma_companion.bumble_backend` over a virtual link.

Examples
--------
>>> import asyncio
>>> from melisma_companion.client import MelismaClient
>>> async def one_tap(path_take, path_backing):  # doctest: +SKIP
...     boxes = await MelismaClient.scan(timeout=5)
...     box = MelismaClient(boxes[0].device)
...     await box.connect()                     # refuses a box with another protocol version
...     if not box.bonded:
...         await box.pair(passkey=int(input("passkey shown on the box: ")))
...     await box.set_controls(style="cpop", warmth=0.3, reverb=0.5)
...     await box.upload(path_take, "take")
...     await box.upload(path_backing, "backing")
...     await box.mix("take.m4a", "backing.m4a", "mix.m4a", progress=print)
...     await box.download("mix", "mix.m4a", "mix.m4a")
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.exc import BleakError, BleakGATTProtocolError
from melisma import protocol as p
from melisma.errors import DeviceError

logger = logging.getLogger(__name__)

#: ATT errors meaning "this needs an encrypted link from a bonded central".
SECURITY_ATT_ERRORS = {0x05, 0x0F}

#: Chunk rejections that re-sending cannot cure: the upload stops and reports them.
FATAL_UPLOAD_ERRORS = frozenset({p.ErrorCode.NO_SPACE, p.ErrorCode.TOO_LARGE, p.ErrorCode.INTERNAL})

TransferProgress = Callable[[int, int], None]  # (bytes done, total bytes)
JobProgress = Callable[[str, float], None]  # (stage, fraction)


class BoxError(DeviceError):
    """The box refused a request; ``code`` is the protocol ErrorCode it replied with."""

    def __init__(self, message: str, code: p.ErrorCode = p.ErrorCode.INTERNAL):
        super().__init__(message)
        self.code = code


class NotPairedError(BoxError):
    """The request needs a bonded, encrypted link: pair first (open the box's pairing window)."""


class LinkLostError(BoxError):
    """The Bluetooth link dropped during a request; reconnect and repeat (transfers resume)."""


class JobFailedError(BoxError):
    """A job on the box failed or was cancelled."""


@dataclass(frozen=True)
class FoundBox:
    """A box seen while scanning."""

    address: str
    name: str | None
    rssi: int
    device: BLEDevice


def _kind(kind: p.FileKind | str | int) -> p.FileKind:
    if isinstance(kind, str):
        try:
            return p.FileKind[kind.upper()]
        except KeyError:
            raise BoxError(f"unknown file kind {kind!r}; use one of {', '.join(k.name.lower() for k in p.FileKind)}",
                           p.ErrorCode.MALFORMED) from None
    return p.FileKind(kind)


# ----------------------------------------------------------------------------------------------
# Protocol 1.1: the box's own audio (calibrate, record/stop, monitor on/off, play, audio status).
# Kept apart from the 1.0 client; MelismaClient inherits these methods.


class AudioClientMixin:
    """The 1.1 audio requests, for a connected, bonded :class:`MelismaClient` (a 1.0 box has none)."""

    audio_status: p.AudioStatus | None = None
    audio_status_listeners: list

    def _require_audio(self) -> None:
        if self.box_version is None or tuple(self.box_version) < p.AUDIO_MIN_VERSION:
            raise BoxError(f"the box speaks protocol {self.box_version}; its own audio needs "
                           f"{p.AUDIO_MIN_VERSION[0]}.{p.AUDIO_MIN_VERSION[1]} (update the box firmware)",
                           p.ErrorCode.INCOMPATIBLE_VERSION)

    async def read_audio_status(self) -> p.AudioStatus:
        """The box's audio status: mode, levels, xruns, round trip, Bluetooth-output warning."""
        self._require_audio()
        data = await self._gatt(self.client.read_gatt_char(p.AUDIO_STATUS_CHAR_UUID))
        status = p.decode(bytes(data), allowed=(p.AudioStatus,))
        self.audio_status = status
        return status

    async def subscribe_audio(self) -> None:
        """Get :class:`~melisma.protocol.AudioStatus` notifications (into ``audio_status_listeners``)."""
        self._require_audio()
        if "audio_status_listeners" not in self.__dict__:
            self.audio_status_listeners = []

        def on_audio(_sender, data: bytearray) -> None:
            status = self._decode_notification(data, (p.AudioStatus,))
            if status is not None:
                self.audio_status = status
                for cb in list(self.audio_status_listeners):
                    cb(status)

        await self._gatt(self.client.start_notify(p.AUDIO_STATUS_CHAR_UUID, on_audio))

    async def calibrate_audio(self, *, timeout_s: float = 10.0) -> None:
        """Start a loopback latency calibration (result in the audio status' ``round_trip_ms``)."""
        self._require_audio()
        await self._command(lambda rid: p.AudioCalibrateCommand(rid, timeout_s))

    async def record_take(self, backing: str, take: str, *, max_seconds: int = 0) -> None:
        """Start recording ``take`` on the box while it plays the stored ``backing``."""
        self._require_audio()
        await self._command(lambda rid: p.AudioRecordCommand(rid, backing, take, max_seconds))

    async def stop_audio(self) -> None:
        """Stop recording, monitoring or playback."""
        self._require_audio()
        await self._command(lambda rid: p.AudioStopCommand(rid))

    async def monitor(self, on: bool = True, *, correction: float = 0.0, backing: str = "") -> None:
        """Live monitoring (耳返) on or off."""
        self._require_audio()
        await self._command(lambda rid: p.AudioMonitorCommand(rid, on, correction, backing))

    async def play(self, kind: p.FileKind | str, name: str) -> None:
        """Play a stored mix or preview through the box's output."""
        self._require_audio()
        await self._command(lambda rid: p.AudioPlayCommand(rid, _kind(kind), name))

    async def wait_audio_idle(self, timeout_s: float = 30.0, poll_s: float = 0.1) -> p.AudioStatus:
        """Poll the audio status until the box's audio is idle again; returns that status."""
        loop = asyncio.get_running_loop()
        t_end = loop.time() + timeout_s
        while True:
            status = await self.read_audio_status()
            if status.mode is p.AudioMode.IDLE:
                return status
            if loop.time() > t_end:
                raise BoxError(f"the box's audio is still {status.mode.name.lower()} after {timeout_s} s",
                               p.ErrorCode.BAD_STATE)
            await asyncio.sleep(poll_s)



# ----------------------------------------------------------------------------------------------
# Protocol 1.1: firmware updates over BLE (upload a signed bundle, install it, follow the outcome).
# Kept apart from the 1.0 client and the audio block; MelismaClient inherits these methods.


class UpdateFailedError(BoxError):
    """A firmware update did not install: refused, rolled back or failed; ``status`` says why."""

    def __init__(self, message: str, status: p.UpdateStatus):
        super().__init__(message, p.ErrorCode.BAD_STATE)
        self.status = status


UpdateProgress = Callable[[p.UpdatePhase, float], None]  # (phase, fraction)


class FirmwareClientMixin:
    """The 1.1 firmware-update requests, for a connected, bonded :class:`MelismaClient`.

    A bundle made by ``tools/build-bundle`` is uploaded like a take (resumable, checksummed), then
    installed by the box's updater: the box writes the request, the updater verifies the
    signature and every digest, installs into the inactive slot, self-tests, switches and
    health-checks (the box service restarts, so the link drops once; the client reconnects).
    """

    update_status: p.UpdateStatus | None = None
    update_status_listeners: list
    last_firmware: str | None = None

    def _require_update(self) -> None:
        if self.box_version is None or tuple(self.box_version) < p.UPDATE_MIN_VERSION:
            raise BoxError(f"the box speaks protocol {self.box_version}; firmware updates over Bluetooth need "
                           f"{p.UPDATE_MIN_VERSION[0]}.{p.UPDATE_MIN_VERSION[1]} (install this update with "
                           f"`melisma-update install` on the box)", p.ErrorCode.INCOMPATIBLE_VERSION)

    async def read_update_status(self) -> p.UpdateStatus:
        """The box's firmware-update status: phase, progress, versions and the whole reason."""
        self._require_update()
        data = await self._gatt(self.client.read_gatt_char(p.UPDATE_STATUS_CHAR_UUID))
        status = p.decode(bytes(data), allowed=(p.UpdateStatus,))
        self.update_status = status
        return status

    async def subscribe_update(self) -> None:
        """Get :class:`~melisma.protocol.UpdateStatus` notifications (into ``update_status_listeners``).

        A notification carries the reason cut to fit the link; :meth:`read_update_status` reads it whole.
        """
        self._require_update()
        if "update_status_listeners" not in self.__dict__:
            self.update_status_listeners = []
        if "_update_changed" not in self.__dict__:
            self._update_changed = asyncio.Event()

        def on_update(_sender, data: bytearray) -> None:
            status = self._decode_notification(data, (p.UpdateStatus,))
            if status is not None:
                self.update_status = status
                self._update_changed.set()
                for cb in list(self.update_status_listeners):
                    cb(status)

        await self._gatt(self.client.start_notify(p.UPDATE_STATUS_CHAR_UUID, on_update))

    async def upload_firmware(self, path: str | os.PathLike, name: str | None = None, *,
                              progress: TransferProgress | None = None, retries: int = 3) -> p.LibraryEntry:
        """Upload a firmware bundle (``.mlb``); resumes after a dropped link like any upload.

        Returns the stored entry; :meth:`install_firmware` installs the last bundle uploaded.
        """
        self._require_update()
        path = Path(path)
        name = name or path.name
        p.check_name(name, p.FileKind.FIRMWARE)
        size = path.stat().st_size
        if size > p.MAX_FIRMWARE_SIZE:
            raise BoxError(f"{path} is {size} bytes; the box accepts firmware bundles up to {p.MAX_FIRMWARE_SIZE}",
                           p.ErrorCode.TOO_LARGE)
        entry = await self.upload(path, p.FileKind.FIRMWARE, name, progress=progress, retries=retries)
        self.last_firmware = entry.name
        return entry

    async def install_firmware(self, name: str | None = None, *, allow_downgrade: bool = False,
                               progress: UpdateProgress | None = None, timeout_s: float = 3600.0) -> p.UpdateStatus:
        """Install an uploaded bundle (default: the last :meth:`upload_firmware`) and wait for the outcome.

        ``progress(phase, fraction)`` follows the update (requested, verifying, installing,
        switched). The box service restarts after the switch: the link drops and the client
        reconnects with the stored bond until ``timeout_s``.

        Returns
        -------
        melisma.protocol.UpdateStatus
            The final status, phase ``INSTALLED``.

        Raises
        ------
        UpdateFailedError
            The bundle was refused, rolled back or failed; ``.status.reason`` says why.
        BoxError
            The box refused the command (no such bundle, an update or a job already running, a box
            not installed by melisma-update).
        """
        self._require_update()
        name = name or self.last_firmware
        if not name:
            raise BoxError("no firmware bundle uploaded yet; call upload_firmware(path) first or give its name",
                           p.ErrorCode.NOT_FOUND)
        await self._command(lambda rid: p.FirmwareInstallCommand(rid, name, allow_downgrade))
        status = await self.wait_for_update(progress=progress, timeout_s=timeout_s)
        if status.phase is not p.UpdatePhase.INSTALLED:
            raise UpdateFailedError(f"firmware {status.bundle or name} {status.phase.name.lower().replace('_', ' ')}: "
                                    f"{status.reason}", status)
        return status

    async def wait_for_update(self, *, progress: UpdateProgress | None = None, timeout_s: float = 3600.0,
                              poll_s: float = 0.5, read_timeout_s: float = 10.0) -> p.UpdateStatus:
        """Follow the update until it has an outcome, reconnecting when the box restarts; returns it.

        A read that gets no answer within ``read_timeout_s`` (a box restarting while the link has
        not dropped yet) counts as a lost link: the client disconnects and reconnects.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen: tuple[p.UpdatePhase, float] | None = None
        while True:
            try:
                if not self.is_connected:
                    await self.reconnect(attempts=3)
                    await self.subscribe_update()
                status = await asyncio.wait_for(self.read_update_status(), read_timeout_s)
            except (LinkLostError, asyncio.TimeoutError) as exc:
                if loop.time() > deadline:
                    raise LinkLostError(f"lost the box while following the update ({exc or 'no answer'}); "
                                        "reconnect and call wait_for_update()", p.ErrorCode.BAD_STATE) from exc
                if isinstance(exc, asyncio.TimeoutError):
                    with contextlib.suppress(Exception):
                        await self.disconnect()
                await asyncio.sleep(poll_s)
                continue
            if progress is not None and (status.phase, status.progress) != seen:
                seen = (status.phase, status.progress)
                progress(status.phase, status.progress)
            if status.phase.finished:
                return status
            if loop.time() > deadline:
                raise BoxError(f"the firmware update is still {status.phase.name.lower()} after {timeout_s:g} s; "
                               "`melisma-update status` on the box tells more", p.ErrorCode.BAD_STATE)
            changed = self.__dict__.get("_update_changed")
            if changed is None:
                await asyncio.sleep(poll_s)
            else:
                changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(changed.wait(), poll_s)


class MelismaClient(AudioClientMixin, FirmwareClientMixin):
    """One box, seen from the phone. Not thread-safe: use it from one asyncio loop."""

    def __init__(self, device: BLEDevice | str, *, backend: type | None = None, connect_timeout_s: float = 20.0,
                 request_timeout_s: float = 20.0):
        self.device = device
        self.backend = backend
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.client: BleakClient | None = None
        self.bonded = False
        self.box_version: tuple[int, int] | None = None
        self.serial_number: str | None = None
        self.firmware: str | None = None
        self.status: p.Status | None = None
        self.controls: p.Controls | None = None
        self.status_listeners: list[Callable[[p.Status], None]] = []
        self.controls_listeners: list[Callable[[p.Controls], None]] = []
        self._request_ids = itertools.cycle(range(1, 0x10000))
        self._replies: dict[int, asyncio.Future] = {}
        self._transfer_events: asyncio.Queue = asyncio.Queue()
        self._data_sink: Callable[[p.Data], None] | None = None
        self._status_changed = asyncio.Event()
        self._lost = asyncio.Event()
        self._closing = False

    # -- discovery and connection ---------------------------------------------------------------

    @staticmethod
    async def scan(timeout: float = 5.0, *, backend: type | None = None) -> list[FoundBox]:
        """Boxes advertising the Melisma service, strongest signal first."""
        kwargs = {"backend": backend} if backend is not None else {}
        found = await BleakScanner.discover(timeout=timeout, service_uuids=[p.MELISMA_SERVICE_UUID],
                                            return_adv=True, **kwargs)
        boxes = [FoundBox(dev.address, adv.local_name or dev.name, adv.rssi, dev) for dev, adv in found.values()
                 if p.MELISMA_SERVICE_UUID in [u.lower() for u in adv.service_uuids]]
        return sorted(boxes, key=lambda b: -b.rssi)

    @property
    def is_connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    async def connect(self) -> None:
        """Connect, check the protocol version (before any pairing), and subscribe when bonded."""
        kwargs: dict[str, Any] = {"timeout": self.connect_timeout_s, "disconnected_callback": self._on_disconnect}
        if self.backend is not None:
            kwargs["backend"] = self.backend
        self.client = BleakClient(self.device, **kwargs)
        self._lost.clear()
        self._closing = False
        try:
            await self.client.connect()
        except (BleakError, asyncio.TimeoutError, OSError) as exc:
            raise LinkLostError(f"could not connect to {self._address}: {exc}; is the box on and in range?") from exc
        try:
            revision = await self.client.read_gatt_char(p.SOFTWARE_REVISION_CHAR_UUID)
            self.box_version = p.parse_software_revision(bytes(revision))
            p.check_compatible(self.box_version)
            self.serial_number = (await self.client.read_gatt_char(p.SERIAL_NUMBER_CHAR_UUID)).decode(errors="replace")
            self.firmware = (await self.client.read_gatt_char(p.FIRMWARE_REVISION_CHAR_UUID)).decode(errors="replace")
        except (p.IncompatibleVersionError, BleakError) as exc:
            await self.disconnect()
            if isinstance(exc, p.IncompatibleVersionError):
                raise
            raise p.IncompatibleVersionError(
                f"{self._address} has no readable Melisma protocol version ({exc}); it is not a Melisma box "
                "or its firmware is too old") from exc
        if self.client.mtu_size < p.MIN_ATT_MTU:
            logger.warning("ATT MTU is %d, below the protocol minimum %d; notifications may be cut",
                           self.client.mtu_size, p.MIN_ATT_MTU)
        try:
            await self._subscribe()
        except NotPairedError:
            self.bonded = False
        else:
            self.bonded = True

    @property
    def _address(self) -> str:
        return self.device.address if isinstance(self.device, BLEDevice) else str(self.device)

    async def pair(self, passkey: int | None = None) -> None:
        """Pair and bond (the box's pairing window must be open). ``passkey``: the number the box shows."""
        self._require_link()
        try:
            if passkey is None:
                await self.client.pair()
            else:
                await self.client.pair(passkey=passkey)
        except BleakError as exc:
            raise NotPairedError(
                f"pairing with {self._address} failed ({exc}); press the box's pair button (or run "
                "`melisma-device pair`) and enter the passkey it shows", p.ErrorCode.NOT_BONDED) from exc
        await self._subscribe()
        self.bonded = True

    async def reconnect(self, attempts: int = 5, delay_s: float = 0.5) -> None:
        """Connect again after a drop (a bonded link encrypts with the stored keys)."""
        last: Exception | None = None
        for attempt in range(attempts):
            with contextlib.suppress(Exception):
                await self.disconnect()
            try:
                await self.connect()
                return
            except LinkLostError as exc:
                last = exc
                await asyncio.sleep(delay_s * (attempt + 1))
        raise LinkLostError(f"could not reconnect to {self._address} after {attempts} attempts: {last}")

    async def disconnect(self) -> None:
        self._closing = True
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(BleakError, asyncio.TimeoutError):
                await client.disconnect()
        self._fail_pending(LinkLostError("disconnected", p.ErrorCode.BAD_STATE))

    def _on_disconnect(self, _client) -> None:
        self._lost.set()
        if not self._closing:
            logger.warning("link to %s dropped", self._address)
        self._fail_pending(LinkLostError(f"the link to {self._address} dropped; reconnect and repeat",
                                         p.ErrorCode.BAD_STATE))

    def _fail_pending(self, error: Exception) -> None:
        for fut in self._replies.values():
            if not fut.done():
                fut.set_exception(error)
        self._replies.clear()
        self._transfer_events.put_nowait(error)
        self._status_changed.set()

    def _require_link(self) -> None:
        if not self.is_connected:
            raise LinkLostError(f"not connected to {self._address}; call connect() or reconnect()",
                                p.ErrorCode.BAD_STATE)

    # -- GATT plumbing --------------------------------------------------------------------------

    async def _gatt(self, coro):
        """Run a GATT operation, turning ATT security errors and link loss into typed errors."""
        self._require_link()
        try:
            return await coro
        except asyncio.CancelledError:
            # A backend cancels the pending ATT request when the link drops (Bumble does); that
            # is link loss, not a cancellation of the caller, which is re-raised as it came.
            task = asyncio.current_task()
            if (task is not None and getattr(task, "cancelling", lambda: 0)()) or (
                    self.is_connected and not self._lost.is_set()):
                raise
            raise LinkLostError(f"the link to {self._address} dropped during the request; reconnect and repeat",
                                p.ErrorCode.BAD_STATE) from None
        except BleakGATTProtocolError as exc:
            code = int(exc.code)
            if code in SECURITY_ATT_ERRORS:
                raise NotPairedError(f"the box needs a bonded, encrypted link for this (ATT error 0x{code:02x}); "
                                     "pair first", p.ErrorCode.NOT_BONDED) from None
            proto = p.error_from_att(code)
            raise BoxError(f"the box refused the request: {proto.name if proto else f'ATT error 0x{code:02x}'}",
                           proto or p.ErrorCode.INTERNAL) from None
        except BleakError as exc:
            if not self.is_connected:
                raise LinkLostError(f"the link to {self._address} dropped ({exc}); reconnect and repeat",
                                    p.ErrorCode.BAD_STATE) from None
            raise BoxError(f"Bluetooth error talking to {self._address}: {exc}") from None

    async def _subscribe(self) -> None:
        c = self.client
        await self._gatt(c.start_notify(p.STATUS_CHAR_UUID, self._on_status))
        await self._gatt(c.start_notify(p.CONTROLS_CHAR_UUID, self._on_controls))
        await self._gatt(c.start_notify(p.COMMAND_CHAR_UUID, self._on_command_reply))
        await self._gatt(c.start_notify(p.TRANSFER_CONTROL_CHAR_UUID, self._on_transfer_event))
        await self._gatt(c.start_notify(p.TRANSFER_DATA_CHAR_UUID, self._on_data))
        self.status = p.decode(await self._gatt(c.read_gatt_char(p.STATUS_CHAR_UUID)), allowed=(p.Status,))
        self.controls = p.decode(await self._gatt(c.read_gatt_char(p.CONTROLS_CHAR_UUID)), allowed=(p.Controls,))

    def _decode_notification(self, data, allowed):
        try:
            return p.decode(bytes(data), allowed=allowed)
        except p.MessageError as exc:
            logger.warning("ignoring a malformed notification from the box: %s", exc)
            return None

    def _on_status(self, _sender, data: bytearray) -> None:
        status = self._decode_notification(data, (p.Status,))
        if status is None:
            return
        self.status = status
        self._status_changed.set()
        for cb in list(self.status_listeners):
            cb(status)

    def _on_controls(self, _sender, data: bytearray) -> None:
        controls = self._decode_notification(data, (p.Controls,))
        if controls is None:
            return
        self.controls = controls
        for cb in list(self.controls_listeners):
            cb(controls)

    def _on_command_reply(self, _sender, data: bytearray) -> None:
        reply = self._decode_notification(data, (p.CommandReply,))
        if reply is not None and (fut := self._replies.pop(reply.request_id, None)) and not fut.done():
            fut.set_result(reply)

    def _on_transfer_event(self, _sender, data: bytearray) -> None:
        event = self._decode_notification(data, p.TRANSFER_EVENTS)
        if event is not None:
            self._transfer_events.put_nowait(event)

    def _on_data(self, _sender, data: bytearray) -> None:
        try:
            chunk = p.decode(bytes(data), allowed=(p.Data,))
        except p.MessageError:
            chunk = None  # a mangled chunk: the download notices the gap and asks for a re-send
        if self._data_sink is not None:
            self._data_sink(chunk)

    # -- info and controls ----------------------------------------------------------------------

    async def read_info(self) -> p.Info:
        return p.decode(await self._gatt(self.client.read_gatt_char(p.INFO_CHAR_UUID)), allowed=(p.Info,))

    async def read_status(self) -> p.Status:
        self.status = p.decode(await self._gatt(self.client.read_gatt_char(p.STATUS_CHAR_UUID)), allowed=(p.Status,))
        return self.status

    async def read_controls(self) -> p.Controls:
        self.controls = p.decode(await self._gatt(self.client.read_gatt_char(p.CONTROLS_CHAR_UUID)),
                                 allowed=(p.Controls,))
        return self.controls

    async def set_controls(self, controls: p.Controls | None = None, *, style: str | p.Style | None = None,
                           **sliders: float) -> p.Controls:
        """Write the style and sliders; unspecified ones keep their current values on the box."""
        if controls is None:
            current = self.controls or await self.read_controls()
            controls = p.Controls(current.style if style is None else style, {**current.sliders, **sliders})
        await self._gatt(self.client.write_gatt_char(p.CONTROLS_CHAR_UUID, controls.encode(), response=True))
        self.controls = controls
        return controls

    # -- commands and jobs ----------------------------------------------------------------------

    async def _command(self, build: Callable[[int], p.Message]) -> p.CommandReply:
        request_id = next(self._request_ids)
        msg = build(request_id)
        fut = asyncio.get_running_loop().create_future()
        self._replies[request_id] = fut
        await self._gatt(self.client.write_gatt_char(p.COMMAND_CHAR_UUID, msg.encode(), response=True))
        try:
            reply = await asyncio.wait_for(fut, self.request_timeout_s)
        except asyncio.TimeoutError:
            self._replies.pop(request_id, None)
            raise BoxError(f"the box did not answer {type(msg).__name__} within {self.request_timeout_s:.0f} s",
                           p.ErrorCode.INTERNAL) from None
        if reply.error is not p.ErrorCode.OK:
            raise BoxError(f"{type(msg).__name__} refused: {reply.error.name}: {reply.detail}", reply.error)
        return reply

    async def start_mix(self, take: str, backing: str, out: str) -> int:
        """Queue a mix with the current controls; returns the job id."""
        return (await self._command(lambda rid: p.MixCommand(rid, take, backing, out))).job_id

    async def mix(self, take: str, backing: str, out: str, *, progress: JobProgress | None = None,
                  timeout_s: float | None = None) -> p.Status:
        """Queue a mix and wait for it; ``progress(stage, fraction)`` follows the status notifications."""
        job_id = await self.start_mix(take, backing, out)
        return await self.wait_for_job(job_id, progress=progress, timeout_s=timeout_s)

    async def analyze(self, take: str, backing: str, plan: str) -> int:
        return (await self._command(lambda rid: p.AnalyzeCommand(rid, take, backing, plan))).job_id

    async def render(self, plan: str, out: str) -> int:
        return (await self._command(lambda rid: p.RenderCommand(rid, plan, out))).job_id

    async def preview(self, plan: str, out: str, *, start_s: float = 0.0, duration_s: float = 10.0) -> int:
        return (await self._command(lambda rid: p.PreviewCommand(rid, plan, out, round(start_s * 1000),
                                                                 round(duration_s * 1000)))).job_id

    async def cancel(self, job_id: int) -> None:
        await self._command(lambda rid: p.CancelCommand(rid, job_id))

    async def delete(self, kind: p.FileKind | str, name: str) -> None:
        await self._command(lambda rid: p.DeleteCommand(rid, _kind(kind), name))

    async def rerun(self, job_id: int) -> int:
        """Queue again a job the box reports interrupted (error INTERRUPTED); returns its new job id.

        Protocol 1.1 (a 1.0 box answers UNKNOWN_TYPE). The box refuses with NOT_FOUND an id it does not remember (or whose inputs
        were deleted) and with BAD_STATE a job that was not interrupted or was already re-run; both
        raise :class:`BoxError` with that code. Follow the new id with :meth:`wait_for_job`.
        """
        if self.box_version is None or tuple(self.box_version) < p.RERUN_MIN_VERSION:
            raise BoxError(f"the box speaks protocol {self.box_version}; re-running an interrupted job needs "
                           f"{p.RERUN_MIN_VERSION[0]}.{p.RERUN_MIN_VERSION[1]} (update the box firmware, or submit "
                           "the job again)", p.ErrorCode.INCOMPATIBLE_VERSION)
        return (await self._command(lambda rid: p.RerunCommand(rid, job_id))).job_id

    async def wait_for_job(self, job_id: int, *, progress: JobProgress | None = None,
                           timeout_s: float | None = None) -> p.Status:
        """Wait until the job finishes; raise :class:`JobFailedError` if it failed or was cancelled."""

        async def waiting() -> p.Status:
            while True:
                status = self.status
                if status is not None and status.job_id == job_id:
                    if progress is not None and status.job_state is p.JobState.RUNNING:
                        progress(status.stage, status.progress)
                    if status.job_state.finished:
                        return status
                self._status_changed.clear()
                if self._lost.is_set():
                    raise LinkLostError(f"the link dropped while waiting for job {job_id}; reconnect and wait again",
                                        p.ErrorCode.BAD_STATE)
                await self._status_changed.wait()

        status = await asyncio.wait_for(waiting(), timeout_s)
        if status.job_state is not p.JobState.DONE:
            raise JobFailedError(f"job {job_id} {status.job_state.name.lower()}: {status.error.name}", status.error)
        if progress is not None:
            progress("done", 1.0)
        return status

    # -- library --------------------------------------------------------------------------------

    async def list_library(self, kind: p.FileKind | str | None = None) -> list[p.LibraryEntry]:
        """Files on the box with sizes and SHA-256 (several pages if needed)."""
        entries: list[p.LibraryEntry] = []
        start = 0
        while True:
            request = p.ListRequest(0 if kind is None else _kind(kind), start)
            await self._gatt(self.client.write_gatt_char(p.LIBRARY_CHAR_UUID, request.encode(), response=True))
            page = p.decode(await self._gatt(self.client.read_gatt_char(p.LIBRARY_CHAR_UUID)),
                            allowed=(p.LibraryPage,))
            entries.extend(page.entries)
            if page.next_start == p.LibraryPage.END or not page.entries:
                return entries
            start = page.next_start

    # -- transfers ------------------------------------------------------------------------------

    async def _control(self, msg: p.Message) -> None:
        await self._gatt(self.client.write_gatt_char(p.TRANSFER_CONTROL_CHAR_UUID, msg.encode(), response=True))

    async def _next_event(self, timeout_s: float | None = None):
        event = await asyncio.wait_for(self._transfer_events.get(), timeout_s or self.request_timeout_s)
        if isinstance(event, Exception):
            raise event
        return event

    def _drain_events(self) -> None:
        while not self._transfer_events.empty():
            self._transfer_events.get_nowait()

    async def _ready(self) -> p.TransferReady:
        event = await self._next_event()
        if isinstance(event, p.TransferDone):  # a refusal comes as TransferDone with the reason
            raise BoxError(f"transfer refused: {event.error.name}: {event.detail}", event.error)
        if not isinstance(event, p.TransferReady):
            raise BoxError(f"expected TransferReady, got {type(event).__name__}", p.ErrorCode.BAD_STATE)
        if event.error is not p.ErrorCode.OK:
            raise BoxError(f"transfer refused: {event.error.name}", event.error)
        return event

    async def upload(self, path: str | os.PathLike, kind: p.FileKind | str, name: str | None = None, *,
                     progress: TransferProgress | None = None, retries: int = 3) -> p.LibraryEntry:
        """Upload a take or backing (1.1: or a firmware bundle); resumes from the box's offset after a drop."""
        path = Path(path)
        data = path.read_bytes()
        entry = p.LibraryEntry(_kind(kind), name or path.name, len(data), hashlib.sha256(data).digest())
        limit = p.MAX_FIRMWARE_SIZE if entry.kind is p.FileKind.FIRMWARE else p.MAX_FILE_SIZE  # protocol 1.1
        if entry.size > limit:
            raise BoxError(f"{path} is {entry.size} bytes; the box accepts up to {limit}", p.ErrorCode.TOO_LARGE)
        for attempt in range(retries + 1):
            try:
                return await self._upload_once(data, entry, progress)
            except LinkLostError:
                if attempt == retries:
                    raise
                logger.info("upload of %s interrupted; reconnecting to resume", entry.name)
                await self.reconnect()
        raise AssertionError("unreachable")

    async def _upload_once(self, data: bytes, entry: p.LibraryEntry, progress: TransferProgress | None):
        self._drain_events()
        request_id = next(self._request_ids)
        await self._control(p.UploadBegin(request_id, entry.kind, entry.name, entry.size, entry.sha256))
        ready = await self._ready()
        self.last_resume_offset = ready.offset
        tid = ready.transfer_id
        chunk = min(ready.chunk_size, p.chunk_payload_size(max(p.MIN_ATT_MTU, self.client.mtu_size)))
        window = max(1, ready.window)
        offset = ready.offset
        stalls = 0
        if progress:
            progress(offset, entry.size)
        while offset < entry.size:
            pos = offset
            for _ in range(window):
                if pos >= entry.size:
                    break
                payload = data[pos:pos + chunk]
                await self._gatt(self.client.write_gatt_char(
                    p.TRANSFER_DATA_CHAR_UUID, p.Data(tid, pos, payload).encode(), response=False))
                pos += len(payload)
            try:
                event = await self._next_event(5.0)
            except asyncio.TimeoutError:
                stalls += 1
                if stalls > 5:
                    raise BoxError(f"upload of {entry.name} stalled at byte {offset}", p.ErrorCode.BAD_STATE) from None
                await self._control(p.TransferQuery(tid))  # answered by TransferAck(offset)
                continue
            if isinstance(event, (p.TransferAck, p.TransferNack)) and event.transfer_id == tid:
                if isinstance(event, p.TransferNack) and event.error in FATAL_UPLOAD_ERRORS:
                    # re-sending cannot help (the box is full): stop and say so; the box keeps the
                    # bytes below event.offset, so a later upload resumes from there
                    raise BoxError(f"upload of {entry.name} stopped at byte {event.offset} of {entry.size}: "
                                   f"{event.error.name}: the box has no room; delete old mixes on the box and "
                                   f"upload again (it resumes)", event.error)
                if isinstance(event, p.TransferNack):
                    logger.info("box rejected a chunk (%s); re-sending from %d", event.error.name, event.offset)
                offset = event.offset
                stalls = 0
                if progress:
                    progress(offset, entry.size)
            elif isinstance(event, p.TransferDone) and event.error is not p.ErrorCode.OK:
                raise BoxError(f"upload of {entry.name} failed: {event.error.name}: {event.detail}", event.error)
        await self._control(p.UploadCommit(tid))
        while True:
            event = await self._next_event(60.0)
            if isinstance(event, p.TransferDone) and event.transfer_id in (tid, 0):
                if event.error is not p.ErrorCode.OK:
                    raise BoxError(f"upload of {entry.name} failed: {event.error.name}: {event.detail}", event.error)
                return entry

    async def download(self, kind: p.FileKind | str, name: str, path: str | os.PathLike, *,
                       progress: TransferProgress | None = None, retries: int = 3) -> Path:
        """Download a file; a ``<path>.part`` left by a dropped link is resumed from its size."""
        path = Path(path)
        for attempt in range(retries + 1):
            try:
                return await self._download_once(_kind(kind), name, path, progress)
            except LinkLostError:
                if attempt == retries:
                    raise
                logger.info("download of %s interrupted; reconnecting to resume", name)
                await self.reconnect()
        raise AssertionError("unreachable")

    async def _download_once(self, kind: p.FileKind, name: str, path: Path, progress: TransferProgress | None) -> Path:
        part = path.with_name(path.name + ".part")
        offset = part.stat().st_size if part.exists() else 0
        self._drain_events()
        request_id = next(self._request_ids)
        received: asyncio.Queue = asyncio.Queue()
        self._data_sink = received.put_nowait
        try:
            await self._control(p.DownloadBegin(request_id, kind, name, offset))
            ready = await self._ready()
            if offset > ready.size:  # the .part is from another file of that name: start over
                part.unlink()
                return await self._download_once(kind, name, path, progress)
            tid, size, window = ready.transfer_id, ready.size, max(1, ready.window)
            self.last_resume_offset = offset
            if progress:
                progress(offset, size)
            with open(part, "ab") as f:
                count = 0
                gap_reported = False
                while offset < size:
                    try:
                        chunk = await asyncio.wait_for(received.get(), 3.0)
                    except asyncio.TimeoutError:
                        self._require_link()
                        await self._control(p.DownloadAck(tid, offset))  # ask again from where we are
                        continue
                    if isinstance(chunk, Exception):
                        raise chunk
                    if chunk is None or chunk.transfer_id != tid or not chunk.crc_ok or chunk.offset != offset:
                        if chunk is not None and chunk.transfer_id == tid and chunk.offset < offset and chunk.crc_ok:
                            continue  # a duplicate
                        if not gap_reported:
                            gap_reported, count = True, 0
                            await self._control(p.DownloadAck(tid, offset))  # re-send from here
                        continue
                    f.write(chunk.payload)
                    offset += len(chunk.payload)
                    gap_reported = False
                    count += 1
                    if count >= window or offset >= size:
                        count = 0
                        f.flush()
                        await self._control(p.DownloadAck(tid, offset))
                        if progress:
                            progress(offset, size)
            while True:
                event = await self._next_event(10.0)
                if isinstance(event, p.TransferDone) and event.transfer_id == tid:
                    break
        finally:
            self._data_sink = None
        digest = hashlib.sha256(part.read_bytes()).digest()
        if digest != ready.sha256:
            part.unlink()
            raise BoxError(f"{name}: SHA-256 of the downloaded bytes does not match the box's; download it again",
                           p.ErrorCode.BAD_CHECKSUM)
        os.replace(part, path)
        return path

