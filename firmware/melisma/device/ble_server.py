"""The box's GATT peripheral, on Bumble.

Bumble runs the whole host stack (HCI, L2CAP, ATT/GATT, SMP) in Python, so the same code drives
a Raspberry Pi's radio through ``hci-socket:0``, a USB dongle through ``usb:0``, or a virtual
controller on a :class:`bumble.link.LocalLink` in tests. The wire format is in
:mod:`melisma.protocol`; this module maps it onto GATT:

* :class:`MelismaDeviceInformationService` (0x180A) — open to anyone: manufacturer, model, serial,
  firmware, and the protocol version (software revision string).
* :class:`MelismaService` — info, controls, status, command, library and the two transfer
  characteristics. Every one of them (and every CCCD) needs an encrypted link from a bonded
  central: an unencrypted link gets ATT "Insufficient Encryption" (0x0F), an encrypted link from
  a central that did not bond gets "Insufficient Authentication" (0x05).

Pairing (LE Secure Connections, bonding) is accepted only while the :class:`PairingWindow` is
open (the button on the box, ``melisma-device pair``). With a display or LEDs to show a passkey
the box uses passkey entry, otherwise Just Works. Bonds live in a JSON key store in the data
directory and survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from bumble import data_types, gatt
from bumble.att import ATT_Error, Attribute, AttributeValue, AttributeValueV2
from bumble.att import ErrorCode as AttErrorCode
from bumble.core import UUID, AdvertisingData
from bumble.device import Connection, Device, DeviceConfiguration
from bumble.gatt import Characteristic, Descriptor
from bumble.hci import Address
from bumble.keys import JsonKeyStore, PairingKeys
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.profiles.device_information_service import DeviceInformationService

from .. import __version__
from .. import protocol as p
from ..audio_io import atomic_write_text
from ..errors import AudioDeviceError, DeviceError
from .audio.box import BoxAudio
from .audio.devices import AudioSettings
from .engine_adapter import PipelineEngine
from .firmware import FirmwareUpdates, UpdateRequestError
from .guard import RejectionGuard, quiet_expected_rejections
from .jobs import JobError, JobQueue
from .repair import load_identity, repair_data_dir
from .storage import Storage, StorageError, UploadSession

logger = logging.getLogger(__name__)

#: Seconds without an acknowledgement before a download re-sends from the last acknowledged byte.
DOWNLOAD_ACK_TIMEOUT_S = 3.0
#: Advertising interval in milliseconds.
ADVERTISING_INTERVAL_MS = 100.0
#: Status notifications that only move the progress bar are sent at most this often.
STATUS_MIN_INTERVAL_S = 0.05

ENCRYPTED_READ = Attribute.READABLE | Attribute.READ_REQUIRES_ENCRYPTION
#: A message class a characteristic accepts (``_decode`` returns an instance of one of them).
M = TypeVar("M", bound=p.Message)
ENCRYPTED_WRITE = Attribute.WRITEABLE | Attribute.WRITE_REQUIRES_ENCRYPTION


# ----------------------------------------------------------------------------------------------
# Security: bonds, pairing window, the per-request check


class BondStore(JsonKeyStore):
    """Bumble's JSON key store plus an in-memory set of bonded addresses for synchronous checks."""

    def __init__(self, namespace: str, filename: str | os.PathLike):
        super().__init__(namespace, str(filename))
        self.addresses: set[str] = set()

    async def load_addresses(self) -> None:
        self.addresses = {name for name, _ in await self.get_all()}

    async def update(self, name: str, keys: PairingKeys) -> None:
        await super().update(name, keys)
        self.addresses.add(name)

    async def delete(self, name: str) -> None:
        await super().delete(name)
        self.addresses.discard(name)

    async def delete_all(self) -> None:
        await super().delete_all()
        self.addresses.clear()


class PairingWindow:
    """Pairing is allowed only for ``duration_s`` after :meth:`open` (the button press)."""

    def __init__(self):
        self._until = 0.0
        self.listeners: list[Callable[[bool], None]] = []

    def open(self, duration_s: float = p.PAIRING_WINDOW_S) -> None:
        self._until = time.monotonic() + duration_s
        logger.info("pairing window open for %.0f s", duration_s)
        for cb in self.listeners:
            cb(True)

    def close(self) -> None:
        self._until = 0.0
        for cb in self.listeners:
            cb(False)

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._until

    @property
    def remaining_s(self) -> float:
        return max(0.0, self._until - time.monotonic())


class BoxPairingDelegate(PairingDelegate):
    """Accepts pairing only inside the window; shows the passkey when the box can display one."""

    def __init__(self, window: PairingWindow, show_passkey: Callable[[int], None] | None):
        io = (PairingDelegate.IoCapability.DISPLAY_OUTPUT_ONLY if show_passkey
              else PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT)
        super().__init__(io_capability=io)
        self.window = window
        self.show_passkey = show_passkey

    async def accept(self) -> bool:
        if not self.window.is_open:
            logger.warning("pairing refused: the pairing window is closed (press the pair button first)")
        return self.window.is_open

    async def display_number(self, number: int, digits: int) -> None:
        if self.show_passkey is not None:
            self.show_passkey(number)


# ----------------------------------------------------------------------------------------------
# Per-connection state


@dataclasses.dataclass
class Link:
    connection: Connection
    upload: UploadSession | None = None
    upload_id: int = 0
    chunks_since_ack: int = 0
    nacked: bool = False
    window: int = p.DEFAULT_WINDOW_CHUNKS
    download_task: asyncio.Task | None = None
    download_id: int = 0
    download_acks: asyncio.Queue = dataclasses.field(default_factory=asyncio.Queue)
    library_page: bytes | None = None


# ----------------------------------------------------------------------------------------------
# Services


class MelismaDeviceInformationService(DeviceInformationService):
    """Device Information (0x180A), readable without pairing; announces the protocol version."""

    def __init__(self, serial_number: str):
        super().__init__(
            manufacturer_name=p.MANUFACTURER_NAME,
            model_number=p.MODEL_NUMBER,
            serial_number=serial_number,
            firmware_revision=__version__,
            software_revision=p.software_revision(),
        )
        # Bumble stores a write to a plain-bytes value; these strings must stay read-only.
        for char in self.characteristics:
            char.value = AttributeValue(read=lambda connection, v=char.value: v, write=_not_writable)


def _not_writable(connection, value) -> None:
    raise ATT_Error(AttErrorCode.WRITE_NOT_PERMITTED)


def _not_readable(connection) -> bytes:
    # Bumble does not check the READABLE permission itself; a write-only value must say so.
    raise ATT_Error(AttErrorCode.READ_NOT_PERMITTED)


class MelismaService(gatt.Service):
    """The Melisma service: owns its characteristics and answers them from the box's parts."""

    def __init__(self, box: MelismaBox):
        self.box = box
        C = Characteristic.Properties

        self.info = Characteristic(p.INFO_CHAR_UUID, C.READ, ENCRYPTED_READ,
                                   AttributeValue(read=self._read_info, write=_not_writable))
        self.controls = self._notifying(p.CONTROLS_CHAR_UUID, C.READ | C.WRITE | C.NOTIFY,
                                        ENCRYPTED_READ | ENCRYPTED_WRITE,
                                        AttributeValue(read=self._read_controls, write=self._write_controls))
        self.status = self._notifying(p.STATUS_CHAR_UUID, C.READ | C.NOTIFY, ENCRYPTED_READ,
                                      AttributeValue(read=self._read_status, write=_not_writable))
        self.command = self._notifying(p.COMMAND_CHAR_UUID, C.WRITE | C.NOTIFY, ENCRYPTED_WRITE,
                                       AttributeValue(read=_not_readable, write=self._write_command))
        self.library: Characteristic[bytes] = Characteristic(
            p.LIBRARY_CHAR_UUID, C.READ | C.WRITE, ENCRYPTED_READ | ENCRYPTED_WRITE,
            AttributeValue(read=self._read_library, write=self._write_library))
        self.transfer_control = self._notifying(p.TRANSFER_CONTROL_CHAR_UUID, C.WRITE | C.NOTIFY, ENCRYPTED_WRITE,
                                                AttributeValue(read=_not_readable, write=self._write_transfer_control))
        self.transfer_data = self._notifying(p.TRANSFER_DATA_CHAR_UUID, C.WRITE | C.WRITE_WITHOUT_RESPONSE | C.NOTIFY,
                                             ENCRYPTED_WRITE, AttributeValue(read=_not_readable, write=self._write_data))
        # protocol 1.1: the box's own audio (status with level meters, xruns, Bluetooth warning)
        self.audio_status = self._notifying(p.AUDIO_STATUS_CHAR_UUID, C.READ | C.NOTIFY, ENCRYPTED_READ,
                                            AttributeValue(read=self._read_audio_status, write=_not_writable))
        # protocol 1.1: firmware updates (phase, progress and outcome of an install asked for over BLE)
        self.update_status = self._notifying(p.UPDATE_STATUS_CHAR_UUID, C.READ | C.NOTIFY, ENCRYPTED_READ,
                                             AttributeValue(read=self._read_update_status, write=_not_writable))
        super().__init__(p.MELISMA_SERVICE_UUID, [self.info, self.controls, self.status, self.command, self.library,
                                                  self.transfer_control, self.transfer_data, self.audio_status,
                                                  self.update_status])
        self._transfer_ids = itertools.cycle(range(1, 256))
        self._last_status: bytes = b""
        self._last_status_time = 0.0
        self._status_flush: asyncio.TimerHandle | None = None

    def _notifying(self, uuid, properties, permissions, value) -> Characteristic:
        """A characteristic whose CCCD (subscription) also needs an encrypted, bonded link."""
        char = Characteristic(uuid, properties, permissions, value)
        server = self.box.device.gatt_server

        def read_cccd(bearer):
            self.box.require_bonded(bearer)
            return server.read_cccd(bearer, char)

        def write_cccd(bearer, value):
            self.box.require_bonded(bearer)
            server.write_cccd(bearer, char, value)

        char.descriptors = [
            Descriptor(
                gatt.GATT_CLIENT_CHARACTERISTIC_CONFIGURATION_DESCRIPTOR,
                ENCRYPTED_READ | ENCRYPTED_WRITE,
                AttributeValueV2(read_cccd, write_cccd),
            )
        ]
        return char

    # -- helpers --------------------------------------------------------------------------------

    def _decode(self, connection, data: bytes, allowed: tuple[type[M], ...]) -> M:
        self.box.require_bonded(connection)
        return cast(M, p.decode(data, allowed=allowed))  # decode returns only instances of ``allowed``

    def _send(self, connection: Connection, char: Characteristic, msg: p.Message) -> None:
        """Notify one central (in order: tasks start in the order they are created)."""
        data = msg.encode()
        asyncio.get_running_loop().create_task(self._notify(connection, char, data))

    async def _notify(self, connection, char, data: bytes) -> None:
        with contextlib.suppress(Exception):  # the central may have gone; nothing to do then
            await self.box.device.notify_subscriber(connection, char, data)

    # -- info, controls, status ----------------------------------------------------------------

    def _read_info(self, connection) -> bytes:
        self.box.require_bonded(connection)
        return p.Info(
            firmware=__version__, max_file_size=self.box.storage.max_file_size, passkey_display=self.box.show_passkey is not None
        ).encode()

    def _read_controls(self, connection) -> bytes:
        self.box.require_bonded(connection)
        return self.box.controls.encode()

    def _write_controls(self, connection, value: bytes) -> None:
        try:
            msg = self._decode(connection, value, (p.Controls,))
        except p.MessageError as exc:
            self.box.refused(connection, f"controls write: {exc}")
            raise ATT_Error(p.att_error_code(exc.code)) from None
        self.box.set_controls(msg, source=connection)

    def notify_controls(self, controls: p.Controls, *, skip: Connection | None = None) -> None:
        for connection in list(self.box.device.connections.values()):
            if connection is not skip:
                self._send(connection, self.controls, controls)

    def _read_status(self, connection) -> bytes:
        self.box.require_bonded(connection)
        return self.box.jobs.status().encode()

    def on_status(self, status: p.Status) -> None:
        """Notify status changes; progress-only changes are rate-limited, state changes go at once."""
        data = status.encode()
        if data == self._last_status:
            return
        now = time.monotonic()
        state_changed = data[:6] != self._last_status[:6]
        if state_changed or now - self._last_status_time >= STATUS_MIN_INTERVAL_S:
            self._broadcast_status(data)
        elif self._status_flush is None:
            self._status_flush = asyncio.get_running_loop().call_later(
                STATUS_MIN_INTERVAL_S, lambda: self._broadcast_status(self.box.jobs.status().encode())
            )

    def _broadcast_status(self, data: bytes) -> None:
        if self._status_flush is not None:
            self._status_flush.cancel()
            self._status_flush = None
        if data == self._last_status:
            return
        self._last_status, self._last_status_time = data, time.monotonic()
        for connection in list(self.box.device.connections.values()):
            asyncio.get_running_loop().create_task(self._notify(connection, self.status, data))

    # -- audio status (protocol 1.1) ------------------------------------------------------------

    def _read_audio_status(self, connection) -> bytes:
        self.box.require_bonded(connection)
        return self.box.audio.status().encode()

    def on_audio_status(self, status: p.AudioStatus) -> None:
        """Notify every central of an audio status change (the box's audio rate-limits meters)."""
        data = status.encode()
        for connection in list(self.box.device.connections.values()):
            asyncio.get_running_loop().create_task(self._notify(connection, self.audio_status, data))

    # -- update status (protocol 1.1) -----------------------------------------------------------

    def _read_update_status(self, connection) -> bytes:
        self.box.require_bonded(connection)
        return self.box.firmware.status().encode()  # a long read carries the whole reason

    def on_update_status(self, status: p.UpdateStatus) -> None:
        """Notify every central; each gets the status cut to fit its link (read it for the whole reason)."""
        for connection in list(self.box.device.connections.values()):
            data = status.fit(max(p.MIN_ATT_MTU, connection.att_mtu) - 3).encode()
            asyncio.get_running_loop().create_task(self._notify(connection, self.update_status, data))

    # -- commands -------------------------------------------------------------------------------

    def _write_command(self, connection, value: bytes) -> None:
        request_id = int.from_bytes(value[1:3], "little") if len(value) >= 3 else 0
        try:
            msg = self._decode(connection, value, p.COMMANDS + p.AUDIO_COMMANDS + p.UPDATE_COMMANDS + p.RERUN_COMMANDS)
            job_id = self._run_command(msg)
        except p.MessageError as exc:
            reply = p.CommandReply(request_id, exc.code, 0, str(exc))
        except AudioDeviceError as exc:  # protocol 1.1 audio commands
            reply = p.CommandReply(request_id, getattr(exc, "code", p.ErrorCode.BAD_STATE), 0, str(exc))
        except (JobError, StorageError) as exc:
            reply = p.CommandReply(request_id, exc.code, 0, str(exc))
        except UpdateRequestError as exc:  # protocol 1.1 firmware install
            reply = p.CommandReply(request_id, exc.code, 0, str(exc))
        else:
            reply = p.CommandReply(msg.request_id, p.ErrorCode.OK, job_id, "")
        self._send(connection, self.command, reply)

    def _run_command(self, msg: p.Message) -> int:
        jobs = self.box.jobs
        if isinstance(msg, p.AUDIO_COMMANDS):  # protocol 1.1: the box's own audio
            return self.box.audio.command(msg)
        if isinstance(msg, p.UPDATE_COMMANDS):  # protocol 1.1: install an uploaded firmware bundle
            return self.box.firmware.install(msg)
        if isinstance(msg, p.RerunCommand):  # protocol 1.1: a job interrupted by a crash, again (new id)
            return jobs.rerun(msg.job_id).id
        if isinstance(msg, p.MixCommand):
            return jobs.submit(
                p.JobKind.MIX, take=msg.take, backing=msg.backing, out=msg.out, accept_alignment_guess=msg.accept_alignment_guess
            ).id
        if isinstance(msg, p.AnalyzeCommand):
            return jobs.submit(
                p.JobKind.ANALYZE,
                take=msg.take,
                backing=msg.backing,
                out=msg.plan,
                accept_alignment_guess=msg.accept_alignment_guess,
            ).id
        if isinstance(msg, p.RenderCommand):
            return jobs.submit(p.JobKind.RENDER, plan=msg.plan, out=msg.out).id
        if isinstance(msg, p.PreviewCommand):
            return jobs.submit(
                p.JobKind.PREVIEW, plan=msg.plan, out=msg.out, start_s=msg.start_ms / 1000, duration_s=msg.duration_ms / 1000
            ).id
        if isinstance(msg, p.CancelCommand):
            return jobs.cancel(msg.job_id).id
        assert isinstance(msg, p.DeleteCommand)
        if msg.kind is p.FileKind.FIRMWARE:  # protocol 1.1: not the bundle the updater is reading
            self.box.firmware.check_deletable(msg.name)
        self.box.storage.delete(msg.kind, msg.name)
        return 0

    # -- library --------------------------------------------------------------------------------

    def _write_library(self, connection, value: bytes) -> None:
        try:
            msg = self._decode(connection, value, (p.ListRequest,))
        except p.MessageError as exc:
            raise ATT_Error(p.att_error_code(exc.code)) from None
        # the page is built once here, so the long read (several Read Blob requests) sees one snapshot
        entries = self.box.storage.list(p.FileKind(msg.kind) if msg.kind else None)
        self.box.link(connection).library_page = p.LibraryPage.fit(entries, msg.start).encode()

    def _read_library(self, connection) -> bytes:
        self.box.require_bonded(connection)
        link = self.box.link(connection)
        if link.library_page is None:
            link.library_page = p.LibraryPage.fit(self.box.storage.list(), 0).encode()
        return link.library_page

    # -- transfer control -----------------------------------------------------------------------

    def _write_transfer_control(self, connection, value: bytes) -> None:
        link = self.box.link(connection)
        try:
            msg = self._decode(connection, value, p.TRANSFER_REQUESTS)
        except p.MessageError as exc:
            self._send(connection, self.transfer_control, p.TransferDone(0, exc.code, str(exc)))
            return
        try:
            if isinstance(msg, p.UploadBegin):
                self._begin_upload(link, msg)
            elif isinstance(msg, p.DownloadBegin):
                self._begin_download(link, msg)
            elif isinstance(msg, p.TransferQuery):
                upload = self._check_upload(link, msg.transfer_id)
                link.nacked = False
                link.chunks_since_ack = 0
                self._send(connection, self.transfer_control, p.TransferAck(link.upload_id, upload.offset))
            elif isinstance(msg, p.UploadCommit):
                upload = self._check_upload(link, msg.transfer_id)
                link.upload = None
                asyncio.get_running_loop().create_task(self._commit(connection, msg.transfer_id, upload))
            elif isinstance(msg, p.DownloadAck):
                if msg.transfer_id != link.download_id or link.download_task is None:
                    raise StorageError(
                        f"no download {msg.transfer_id} on this link; start one with DownloadBegin", p.ErrorCode.BAD_STATE
                    )
                link.download_acks.put_nowait(msg.offset)
            elif isinstance(msg, p.TransferAbort):
                if link.upload is not None and msg.transfer_id == link.upload_id:
                    link.upload.close()  # keep the partial data for a resume
                    link.upload = None
                if link.download_task is not None and msg.transfer_id == link.download_id:
                    link.download_task.cancel()
                    link.download_task = None
        except StorageError as exc:
            tid = getattr(msg, "transfer_id", 0)
            self._send(connection, self.transfer_control, p.TransferDone(tid, exc.code, str(exc)))

    def _check_upload(self, link: Link, transfer_id: int) -> UploadSession:
        """The link's upload ``transfer_id``; StorageError BAD_STATE when there is none."""
        if link.upload is None or transfer_id != link.upload_id:
            raise StorageError(
                f"no upload {transfer_id} on this link; start (or resume) it with UploadBegin", p.ErrorCode.BAD_STATE
            )
        return link.upload

    def _begin_upload(self, link: Link, msg: p.UploadBegin) -> None:
        if msg.kind not in p.UPLOADABLE_KINDS + p.FIRMWARE_UPLOADABLE_KINDS:
            raise StorageError(
                f"cannot upload a {msg.kind.name.lower()}; upload a take, a backing or a firmware bundle", p.ErrorCode.BAD_STATE
            )
        if link.upload is not None:
            link.upload.close()
        link.upload = self.box.storage.begin_upload(msg.kind, msg.name, msg.size, msg.sha256)
        link.upload_id = next(self._transfer_ids)
        link.nacked, link.chunks_since_ack = False, 0
        chunk = p.chunk_payload_size(max(p.MIN_ATT_MTU, link.connection.att_mtu))
        self._send(
            link.connection,
            self.transfer_control,
            p.TransferReady(
                msg.request_id, p.ErrorCode.OK, link.upload_id, link.upload.offset, msg.size, msg.sha256, chunk, link.window
            ),
        )

    async def _commit(self, connection, transfer_id: int, upload: UploadSession) -> None:
        try:
            entry = await asyncio.to_thread(upload.commit)
        except StorageError as exc:
            done = p.TransferDone(transfer_id, exc.code, str(exc))
        else:
            logger.info("stored %s %s (%d bytes)", entry.kind.name.lower(), entry.name, entry.size)
            done = p.TransferDone(transfer_id, p.ErrorCode.OK, entry.name)
        await self._notify(connection, self.transfer_control, done.encode())

    def _write_data(self, connection, value: bytes) -> None:
        """One upload chunk. Bad chunks are NACKed once (and refused by ATT error on a write request)."""
        link = self.box.link(connection)
        try:
            msg = self._decode(connection, value, (p.Data,))
            upload = self._check_upload(link, msg.transfer_id)
        except (p.MessageError, StorageError) as exc:
            code = exc.code
            self._nack(link, code)
            self.box.refused(connection, f"data chunk: {code.name}")
            raise ATT_Error(p.att_error_code(code)) from None
        if not msg.crc_ok:
            self._nack(link, p.ErrorCode.BAD_CHECKSUM)
            raise ATT_Error(p.att_error_code(p.ErrorCode.BAD_CHECKSUM))
        if msg.offset != upload.offset:
            if msg.offset < upload.offset:
                return  # a duplicate of data already held (a re-send overlapping an ack): harmless
            self._nack(link, p.ErrorCode.BAD_OFFSET)
            raise ATT_Error(p.att_error_code(p.ErrorCode.BAD_OFFSET))
        try:
            upload.write(msg.offset, msg.payload)
        except StorageError as exc:
            self._nack(link, exc.code)
            if upload.failed is not None:  # e.g. the disk is full: fail once, keep the partial for a resume
                logger.warning("upload of %s stopped: %s", upload.name, exc)
                upload.close()
                link.upload = None
            raise ATT_Error(p.att_error_code(exc.code)) from None
        link.nacked = False
        link.chunks_since_ack += 1
        if link.chunks_since_ack >= link.window or upload.offset == upload.size:
            link.chunks_since_ack = 0
            self._send(connection, self.transfer_control, p.TransferAck(link.upload_id, upload.offset))

    def _nack(self, link: Link, code: p.ErrorCode) -> None:
        if link.nacked or link.upload is None:
            return
        link.nacked = True
        link.chunks_since_ack = 0
        self._send(link.connection, self.transfer_control, p.TransferNack(link.upload_id, link.upload.offset, code))

    # -- downloads ------------------------------------------------------------------------------

    def _begin_download(self, link: Link, msg: p.DownloadBegin) -> None:
        entry = self.box.storage.entry(msg.kind, msg.name)
        if msg.offset > entry.size:
            raise StorageError(
                f"offset {msg.offset} is past the end of {msg.name} ({entry.size} bytes); resume from at most {entry.size}",
                p.ErrorCode.BAD_OFFSET,
            )
        if link.download_task is not None:
            link.download_task.cancel()
        link.download_id = next(self._transfer_ids)
        link.download_acks = asyncio.Queue()
        chunk = p.chunk_payload_size(max(p.MIN_ATT_MTU, link.connection.att_mtu))
        path = self.box.storage.existing(msg.kind, msg.name)
        self._send(
            link.connection,
            self.transfer_control,
            p.TransferReady(
                msg.request_id, p.ErrorCode.OK, link.download_id, msg.offset, entry.size, entry.sha256, chunk, link.window
            ),
        )
        link.download_task = asyncio.get_running_loop().create_task(
            self._send_file(link, link.download_id, path, msg.offset, entry.size, chunk)
        )

    async def _send_file(self, link: Link, tid: int, path: Path, offset: int, size: int, chunk: int) -> None:
        """Send a window of chunks, wait for the client's ack (or re-send request), repeat."""
        connection = link.connection
        acked = offset
        retries = 0
        with open(path, "rb") as f:
            while acked < size:
                pos = acked
                for _ in range(link.window):
                    if pos >= size:
                        break
                    f.seek(pos)
                    payload = f.read(chunk)
                    await self.box.device.notify_subscriber(connection, self.transfer_data, p.Data(tid, pos, payload).encode())
                    pos += len(payload)
                try:
                    new = await asyncio.wait_for(link.download_acks.get(), DOWNLOAD_ACK_TIMEOUT_S)
                except asyncio.TimeoutError:
                    retries += 1
                    if retries > 5:
                        await self._notify(
                            connection,
                            self.transfer_control,
                            p.TransferDone(tid, p.ErrorCode.BAD_STATE, "no acknowledgement; resume the download").encode(),
                        )
                        return
                    continue  # re-send from the last acknowledged byte
                retries = 0
                acked = min(max(0, new), size)
        await self._notify(connection, self.transfer_control, p.TransferDone(tid, p.ErrorCode.OK, path.name).encode())


# ----------------------------------------------------------------------------------------------
# The box


def box_identity(data_dir: Path, address: str | None = None) -> dict:
    """The box's static random address and IRK, made once and kept in ``identity.json``."""
    path = data_dir / "identity.json"
    ident = {}
    if path.exists():
        with contextlib.suppress(ValueError, OSError):
            ident = json.loads(path.read_text())
    changed = False
    if address:
        if ident.get("address") != address:
            ident["address"], changed = address, True
    elif "address" not in ident:
        raw = bytearray(secrets.token_bytes(6))
        raw[0] |= 0xC0  # a static random address has its two top bits set
        ident["address"], changed = ":".join(f"{b:02X}" for b in raw), True
    if "irk" not in ident:
        ident["irk"], changed = secrets.token_hex(16), True
    if changed:
        data_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(ident, indent=2), overwrite=True)
    return ident


class MelismaBox:
    """Bumble device + services + storage + job queue + controls + pairing window."""

    def __init__(
        self,
        hci_source,
        hci_sink,
        *,
        data_dir: str | os.PathLike,
        address: str | None = None,
        engine=None,
        show_passkey: Callable[[int], None] | None = None,
        serial_number: str | None = None,
        audio_settings: AudioSettings | None = None,
        update_root: str | os.PathLike = "/",
        min_free_bytes: int = 0,
        free_space=None,
        rerun_interrupted: bool = False,
        guard: RejectionGuard | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # start-up repair (issue 16): damaged state files are moved aside and shown in Status
        from .storage import FOLDERS, PARTIAL_FOLDER

        self.notices = repair_data_dir(self.data_dir, [*FOLDERS.values(), PARTIAL_FOLDER])
        ident, identity_notices = load_identity(self.data_dir, address)
        self.notices += identity_notices
        self.address = ident["address"]
        self.name = p.advertised_name(self.address)
        self.show_passkey = show_passkey
        self.storage = Storage(self.data_dir / "library", min_free_bytes=min_free_bytes, free_space=free_space)
        self.storage.sweep_leftovers()
        from ..leftovers import sweep

        sweep(self.data_dir, force=True)  # a state file the box was writing when it died
        self.controls = self._load_controls()
        self.jobs = JobQueue(
            engine if engine is not None else PipelineEngine(),
            self.storage,
            controls=lambda: self.controls,
            journal=self.data_dir / "jobs.json",
            rerun_interrupted=rerun_interrupted,
            notices=self.notices,
        )
        self.guard = guard or RejectionGuard()
        quiet_expected_rejections()
        self.pairing_window = PairingWindow()
        self.links: dict[Connection, Link] = {}
        #: Called with the new controls after every change (the front panel shows them).
        self.controls_listeners: list[Callable[[p.Controls], None]] = []

        config = DeviceConfiguration()
        config.load_from_dict({"name": self.name, "address": self.address, "irk": ident["irk"]})
        self.device = Device.from_config_with_hci(config, hci_source, hci_sink)
        self.bonds = BondStore(str(Address(self.address)), self.data_dir / "bonds.json")
        self.device.keystore = self.bonds
        delegate = BoxPairingDelegate(self.pairing_window, show_passkey)
        self.device.pairing_config_factory = lambda connection: PairingConfig(
            sc=True,
            mitm=show_passkey is not None,
            bonding=True,
            delegate=delegate,
            identity_address_type=PairingConfig.AddressType.RANDOM,
        )
        self.device_information = MelismaDeviceInformationService(serial_number or self.address.replace(":", ""))
        self.service = MelismaService(self)
        self.device.add_services([self.device_information, self.service])
        self._guard_unencrypted_requests()
        self.device.advertising_data = bytes(
            AdvertisingData(
                [
                    data_types.Flags(
                        AdvertisingData.Flags.LE_GENERAL_DISCOVERABLE_MODE | AdvertisingData.Flags.BR_EDR_NOT_SUPPORTED
                    ),
                    data_types.CompleteListOf128BitServiceUUIDs([UUID(p.MELISMA_SERVICE_UUID)]),
                ]
            )
        )
        # the name does not fit beside a 128-bit UUID in 31 bytes: it goes in the scan response
        self.device.scan_response_data = bytes(AdvertisingData([data_types.CompleteLocalName(self.name)]))
        self.device.on(Device.EVENT_CONNECTION, self._on_connection)
        self.jobs.listeners.append(self.service.on_status)
        # protocol 1.1: the box's own audio (PortAudio is only touched when a command runs)
        self.audio = BoxAudio(self.data_dir, self.storage, settings=audio_settings, controls=lambda: self.controls)
        self.audio.listeners.append(self.service.on_audio_status)
        # protocol 1.1: firmware updates over BLE, installed by the updater in ``update_root``
        self.firmware = FirmwareUpdates(self.data_dir, self.storage, root=update_root, busy=self._update_blocker)
        self.firmware.listeners.append(self.service.on_update_status)

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.bonds.load_addresses()
        await self.device.power_on()
        self.jobs.start()
        self.firmware.start()
        # ~100 ms: quick to find for a phone, still cheap for a mains-powered box
        await self.device.start_advertising(
            auto_restart=True, advertising_interval_min=ADVERTISING_INTERVAL_MS, advertising_interval_max=ADVERTISING_INTERVAL_MS
        )
        logger.info("%s advertising at %s (%d bonded centrals)", self.name, self.address, len(self.bonds.addresses))

    async def stop(self, *, radio: bool = True) -> None:
        """Stop audio, jobs (journaled), updates and links; ``radio=False`` when the radio is gone
        (its HCI commands would only time out).
        """
        await asyncio.get_running_loop().run_in_executor(None, self.audio.close)
        await self.jobs.stop()
        await self.firmware.stop()
        for link in list(self.links.values()):
            self._drop_link(link)
        if not radio:
            return
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        with contextlib.suppress(Exception):
            await self.device.power_off()

    def _update_blocker(self) -> str:
        """Why an update (which restarts the service) must wait now, or ``""``."""
        status = self.jobs.status()
        if status.state is p.DeviceState.BUSY:
            return f"job {status.job_id} ({status.job_kind.name.lower()}) is running"
        audio = self.audio.status()
        if audio.mode is not p.AudioMode.IDLE:
            return f"the box's audio is {audio.mode.name.lower()}"
        return ""

    # -- connections and security ---------------------------------------------------------------

    def _on_connection(self, connection: Connection) -> None:
        logger.info("connection from %s", connection.peer_address)
        self.links[connection] = Link(connection)
        connection.on(Connection.EVENT_DISCONNECTION, lambda *_: self._on_disconnection(connection))
        # Bumble keeps a failed SMP session per connection, which would swallow a second attempt
        # on the same link (e.g. after a mistyped passkey); forget it so the central may retry.
        connection.on(Connection.EVENT_PAIRING_FAILURE, lambda *_: self.device.smp_manager.sessions.pop(connection.handle, None))
        connection.on(Connection.EVENT_PAIRING, lambda *_: self._on_pairing(connection))

    def _on_pairing(self, connection: Connection) -> None:
        session = self.device.smp_manager.sessions.get(connection.handle)
        if session is not None and not session.bonding:
            # Bumble stores keys even when the central did not ask to bond; such a pairing
            # encrypts this link only and must not count as a bond.
            name = str(connection.peer_address)
            self.bonds.addresses.discard(name)
            asyncio.get_running_loop().create_task(self._forget(name))
            logger.info("%s paired without bonding: not kept", name)
        else:
            logger.info("bonded with %s", connection.peer_address)

    async def _forget(self, name: str) -> None:
        with contextlib.suppress(Exception):
            await self.bonds.delete(name)

    def _on_disconnection(self, connection: Connection) -> None:
        self.guard.forget(connection)
        link = self.links.pop(connection, None)
        if link is not None:
            self._drop_link(link)
        logger.info("disconnected %s", connection.peer_address)

    def _drop_link(self, link: Link) -> None:
        if link.upload is not None:
            link.upload.close()  # partial data stays for a resume
            link.upload = None
        if link.download_task is not None:
            link.download_task.cancel()
            link.download_task = None

    def link(self, connection: Connection) -> Link:
        if connection not in self.links:
            self.links[connection] = Link(connection)
        return self.links[connection]

    def is_bonded(self, connection: Connection) -> bool:
        return bool(connection.encryption) and str(connection.peer_address) in self.bonds.addresses

    def require_bonded(self, bearer) -> None:
        """Raise the ATT error a central without an encrypted, bonded link must get."""
        connection = getattr(bearer, "connection", None) or bearer
        if not connection.encryption:
            self.refused(connection, "not encrypted")
            raise ATT_Error(AttErrorCode.INSUFFICIENT_ENCRYPTION)
        if str(connection.peer_address) not in self.bonds.addresses:
            self.refused(connection, "not bonded")
            raise ATT_Error(AttErrorCode.INSUFFICIENT_AUTHENTICATION)

    def _guard_unencrypted_requests(self) -> None:
        """Count requests to the Melisma service on unencrypted links: Bumble refuses them (their
        permissions need encryption) before any handler of ours runs, so they are counted here.
        """
        server = self.device.gatt_server
        inner = server.on_gatt_pdu
        service = self.service

        def on_gatt_pdu(bearer, att_pdu) -> None:
            connection = getattr(bearer, "connection", None) or bearer
            handle = getattr(att_pdu, "attribute_handle", None)
            if (
                handle is not None
                and service.handle <= handle <= service.end_group_handle
                and not getattr(connection, "encryption", 0)
            ):
                self.refused(connection, f"{att_pdu.name.lower()} on an unencrypted link")
            inner(bearer, att_pdu)

        # Bumble has no hook ahead of its own permission checks, so this one server instance's entry
        # point is wrapped; mypy forbids assigning to a method, which is what is meant here.
        server.on_gatt_pdu = on_gatt_pdu  # type: ignore[method-assign]

    def refused(self, connection: Connection, reason: str) -> None:
        """Count a refused request (logged at most once per interval); drop a connection that floods."""
        if self.guard.refuse(connection, reason, peer=str(connection.peer_address)) == "drop":
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(self._drop_connection(connection))

    async def _drop_connection(self, connection: Connection) -> None:
        with contextlib.suppress(Exception):
            await connection.disconnect()

    # -- controls -------------------------------------------------------------------------------

    def _load_controls(self) -> p.Controls:
        path = self.data_dir / "controls.json"
        with contextlib.suppress(OSError, ValueError, p.MessageError):
            saved = json.loads(path.read_text())
            return p.Controls(saved.get("style", "neutral"), saved.get("sliders", {}))
        return p.Controls()

    def set_controls(self, controls: p.Controls, *, source: Connection | None = None) -> None:
        """Change the controls (from a central or the front panel) and tell everyone else."""
        if controls == self.controls:
            return
        self.controls = controls
        with contextlib.suppress(OSError):
            atomic_write_text(
                self.data_dir / "controls.json",
                json.dumps({"style": controls.style.engine_name, "sliders": controls.sliders}),
                overwrite=True,
            )
        self.service.notify_controls(controls, skip=source)
        self.audio.on_controls(controls)
        for listener in list(self.controls_listeners):
            try:
                listener(controls)
            except Exception:  # a broken listener must not stop a controls change
                logger.exception("controls listener failed")


def local_link_hci(link, address: str):
    """An HCI (source, sink) pair for a virtual controller on a Bumble ``LocalLink`` (tests, benchmarks)."""
    from bumble.controller import Controller
    from bumble.transport.common import AsyncPipeSink

    controller = Controller(f"ctrl-{address}", link=link, public_address=address)
    return controller, AsyncPipeSink(controller)


__all__ = [
    "BondStore",
    "DeviceError",
    "MelismaBox",
    "MelismaDeviceInformationService",
    "MelismaService",
    "PairingWindow",
    "local_link_hci",
]
