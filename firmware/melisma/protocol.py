"""The Melisma Bluetooth LE protocol: the single source of truth for both ends of the link.

UUIDs, message types, their binary encoding, limits and the protocol version live here and only
here. The box (``melisma.device``) and the companion app (``melisma_companion``) both import this
module, so it imports nothing outside the standard library (the phone build ships it as is).
The page ``firmware/docs/protocol.md`` describes the same thing for a third party.

Encoding: every message starts with a one-byte message type; fields follow in a fixed order,
little-endian, with no padding. Strings are one length byte followed by UTF-8. Decoding any byte
string either returns a message object or raises a :class:`melisma.errors.ProtocolError` subclass
that carries a protocol :class:`ErrorCode` (``error.code``), so the box can reply with a typed error.

Examples
--------
>>> from melisma import protocol as p
>>> msg = p.Controls(style=p.Style.CPOP, sliders={"warmth": 0.5, "reverb": -0.25})
>>> data = msg.encode()
>>> p.decode(data) == msg
True
>>> p.decode(b"\\xee")
Traceback (most recent call last):
...
melisma.protocol.UnknownMessageTypeError: message type 0xee is not a Melisma message; known types are 0x01..0x7f (see protocol.md)
"""

from __future__ import annotations

import enum
import hashlib
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import ClassVar

from .errors import ProtocolError

# ----------------------------------------------------------------------------------------------
# Version and limits

#: Protocol version. The major part is what must match: a client refuses a box whose major
#: version differs. Minor versions only add optional things.
PROTOCOL_VERSION = (1, 1)

#: Text the box puts in the Device Information "Software Revision String" (0x2A28), readable
#: before pairing, so a client can check compatibility before it asks to bond.
PROTOCOL_REVISION_PREFIX = "melisma-protocol/"

#: Largest GATT attribute value (Bluetooth Core Vol 3 Part F 3.2.9); no message is longer.
MAX_MESSAGE_SIZE = 512
#: Smallest ATT MTU the protocol works with: every notification fits in ``MIN_ATT_MTU - 3``.
MIN_ATT_MTU = 64
#: ATT MTU both ends ask for (the largest a Bluetooth 4.2+ LE link allows).
PREFERRED_ATT_MTU = 517
#: Largest notification payload at the minimum MTU.
MAX_NOTIFICATION_SIZE = MIN_ATT_MTU - 3
#: Largest file a client may upload (a 10-minute 48 kHz stereo 16-bit WAV is ~115 MB, a
#: 10-minute AAC take ~10 MB; uploads are phone recordings, so 128 MiB is generous).
MAX_FILE_SIZE = 128 * 1024 * 1024
#: Longest file name in bytes (UTF-8, restricted to NAME_PATTERN).
MAX_NAME_LENGTH = 48
#: File names: letters, digits, dot, dash, underscore; no path separators, no leading dot.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")
#: Bytes of header in a DATA chunk (type, transfer id, offset, CRC-32).
DATA_HEADER_SIZE = 10
#: Largest chunk payload (fits a 512-byte attribute value).
MAX_CHUNK_PAYLOAD = MAX_MESSAGE_SIZE - DATA_HEADER_SIZE
#: Chunks a sender may have in flight before it must wait for an acknowledgement.
DEFAULT_WINDOW_CHUNKS = 16
#: Seconds the pairing window stays open after the button press.
PAIRING_WINDOW_S = 120.0
#: Longest device-side preview, in milliseconds.
MAX_PREVIEW_MS = 60_000
#: Audio extensions accepted for takes and backings; outputs may also use these.
AUDIO_EXTENSIONS = (".m4a", ".aac", ".mp3", ".wav", ".flac", ".ogg", ".opus", ".amr")
PLAN_EXTENSIONS = (".json",)


def uuid_for(short: int) -> str:
    """The 128-bit UUID string of Melisma attribute number ``short`` (0x0001 is the service)."""
    return f"4d4c{short:04x}-a8e5-4d6f-9c2b-3b6c1e5a7d00"


# ----------------------------------------------------------------------------------------------
# UUIDs

MELISMA_SERVICE_UUID = uuid_for(0x0001)
INFO_CHAR_UUID = uuid_for(0x0002)  # read: protocol version, firmware, limits
CONTROLS_CHAR_UUID = uuid_for(0x0003)  # read, write, notify: style preset and sliders
STATUS_CHAR_UUID = uuid_for(0x0004)  # read, notify: state, current job, progress
COMMAND_CHAR_UUID = uuid_for(0x0005)  # write, notify: requests and their replies
LIBRARY_CHAR_UUID = uuid_for(0x0006)  # write (list request), read (a page of entries)
TRANSFER_CONTROL_CHAR_UUID = uuid_for(0x0007)  # write, notify: begin/ack/commit/abort
TRANSFER_DATA_CHAR_UUID = uuid_for(0x0008)  # write without response (upload), notify (download)

#: Standard 16-bit assigned numbers, as 128-bit strings (the form bleak reports them in).
def sig_uuid(short: int) -> str:
    """The 128-bit string of a Bluetooth SIG 16-bit UUID."""
    return f"0000{short:04x}-0000-1000-8000-00805f9b34fb"


DEVICE_INFORMATION_SERVICE_UUID = sig_uuid(0x180A)
MANUFACTURER_NAME_CHAR_UUID = sig_uuid(0x2A29)
MODEL_NUMBER_CHAR_UUID = sig_uuid(0x2A24)
SERIAL_NUMBER_CHAR_UUID = sig_uuid(0x2A25)
FIRMWARE_REVISION_CHAR_UUID = sig_uuid(0x2A26)
SOFTWARE_REVISION_CHAR_UUID = sig_uuid(0x2A28)

#: Advertised local name: ``Melisma-`` then the last four hex digits of the box's address.
ADVERTISED_NAME_PREFIX = "Melisma-"
MANUFACTURER_NAME = "Melisma project"
MODEL_NUMBER = "Melisma Box"


def advertised_name(address: str) -> str:
    """``Melisma-XXXX`` from a Bluetooth address such as ``F0:12:34:56:AB:CD`` (gives Melisma-ABCD)."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", address.split("/")[0])
    if len(digits) < 4:
        raise InvalidValueError(f"address {address!r} has fewer than 4 hex digits; give one like F0:12:34:56:AB:CD")
    return ADVERTISED_NAME_PREFIX + digits[-4:].upper()


def software_revision(version: tuple[int, int] = PROTOCOL_VERSION) -> str:
    """The Device Information software revision string that announces the protocol version."""
    return f"{PROTOCOL_REVISION_PREFIX}{version[0]}.{version[1]}"


def parse_software_revision(text: str | bytes) -> tuple[int, int]:
    """The protocol version announced in a Device Information software revision string."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    m = re.fullmatch(re.escape(PROTOCOL_REVISION_PREFIX) + r"(\d+)\.(\d+)", text.strip())
    if not m:
        raise IncompatibleVersionError(
            f"software revision {text!r} does not announce a Melisma protocol; expected "
            f"'{software_revision()}' (is this a Melisma box?)"
        )
    return int(m.group(1)), int(m.group(2))


def check_compatible(remote: tuple[int, int], local: tuple[int, int] = PROTOCOL_VERSION) -> None:
    """Raise :class:`IncompatibleVersionError` unless the major versions match."""
    if remote[0] != local[0]:
        newer = "box" if remote[0] > local[0] else "app"
        raise IncompatibleVersionError(
            f"the box speaks Melisma protocol {remote[0]}.{remote[1]}, this app speaks "
            f"{local[0]}.{local[1]}; update the {'app' if newer == 'box' else 'box firmware'} "
            f"so both use protocol {max(remote[0], local[0])}.x"
        )


# ----------------------------------------------------------------------------------------------
# Error codes and errors


class ErrorCode(enum.IntEnum):
    """Typed errors the box replies with (in replies and as ATT application errors 0x80 + code)."""

    OK = 0
    MALFORMED = 1  # fields do not parse or are out of range
    UNKNOWN_TYPE = 2  # first byte is not a known message type (or not allowed here)
    TOO_LARGE = 3  # message or file over the limit
    TRUNCATED = 4  # message ends before its last field
    BAD_NAME = 5  # file name not allowed
    NOT_FOUND = 6  # no such file, plan or job
    BUSY = 7  # another transfer is in progress on this link
    BAD_CHECKSUM = 8  # CRC-32 of a chunk or SHA-256 of a file does not match
    BAD_OFFSET = 9  # chunk offset is not the next expected one
    BAD_STATE = 10  # request not valid now (e.g. commit before all data arrived)
    NO_SPACE = 11  # storage full
    ENGINE_FAILED = 12  # the engine raised an error running the job
    CANCELLED = 13  # the job was cancelled
    INCOMPATIBLE_VERSION = 14
    NOT_BONDED = 15  # request needs an encrypted link from a bonded central
    INTERNAL = 16  # unexpected failure on the box (a bug)
    ALIGNMENT_UNKNOWN = 17  # the take's offset behind the backing is unknown; retry with accept_alignment_guess or a latency
    INTERRUPTED = 18  # the job was cut off by a crash or power cut of the box; its work files are gone, run it again


#: ATT application error range: the box answers a rejected write with ATT error 0x80 + code.
ATT_APPLICATION_ERROR_BASE = 0x80


class MessageError(ProtocolError):
    """A protocol message could not be decoded or encoded; ``code`` says how (an ErrorCode)."""

    code: ErrorCode = ErrorCode.MALFORMED


class MalformedMessageError(MessageError):
    """A field does not parse or has a value outside its range."""

    code = ErrorCode.MALFORMED


class InvalidValueError(MalformedMessageError):
    """A value given to build a message is out of range (raised before anything is sent)."""


class TruncatedMessageError(MessageError):
    """The message ends before its last field."""

    code = ErrorCode.TRUNCATED


class OversizedMessageError(MessageError):
    """The message is longer than MAX_MESSAGE_SIZE or has bytes after its last field."""

    code = ErrorCode.TOO_LARGE


class UnknownMessageTypeError(MessageError):
    """The first byte is not a known message type, or the type is not allowed where it was sent."""

    code = ErrorCode.UNKNOWN_TYPE


class BadNameError(MessageError):
    """A file name that could escape its folder, is too long or has the wrong extension."""

    code = ErrorCode.BAD_NAME


class IncompatibleVersionError(ProtocolError):
    """The other end speaks a different major protocol version."""

    code = ErrorCode.INCOMPATIBLE_VERSION


# ----------------------------------------------------------------------------------------------
# Enumerations carried in messages


class Style(enum.IntEnum):
    """Style presets; the engine knows them by ``name.lower()``."""

    NEUTRAL = 0
    CPOP = 1
    WESTERN = 2
    BALLAD = 3

    @property
    def engine_name(self) -> str:
        return self.name.lower()


#: Semantic sliders in wire order; each is −1..+1 and travels as hundredths in a signed byte.
SLIDER_NAMES = ("warmth", "reverb", "vocal_level", "air", "tuning", "ornaments")


class FileKind(enum.IntEnum):
    """What a stored file is; each kind has its own folder on the box."""

    TAKE = 1
    BACKING = 2
    MIX = 3
    PREVIEW = 4
    PLAN = 5
    FIRMWARE = 6  # protocol 1.1: a signed firmware bundle (.mlb); see the update block at the end

    @property
    def extensions(self) -> tuple[str, ...]:
        if self is FileKind.FIRMWARE:  # protocol 1.1 firmware bundles
            return FIRMWARE_EXTENSIONS
        return PLAN_EXTENSIONS if self is FileKind.PLAN else AUDIO_EXTENSIONS


#: Kinds a client may upload; the rest are produced by the box.
UPLOADABLE_KINDS = (FileKind.TAKE, FileKind.BACKING)


class DeviceState(enum.IntEnum):
    """Whether the box is idle or busy with a job."""

    IDLE = 0
    BUSY = 1  # a job is running


class JobKind(enum.IntEnum):
    """What a job does: mix, analyze, render or preview."""

    NONE = 0
    MIX = 1
    ANALYZE = 2
    ANALYSE = 2  # an alias, so journals written before the spelling settled on ``analyze`` still read
    RENDER = 3
    PREVIEW = 4


class JobState(enum.IntEnum):
    """Where a job is: queued, running, done, failed or cancelled."""

    NONE = 0
    QUEUED = 1
    RUNNING = 2
    DONE = 3
    FAILED = 4
    CANCELLED = 5

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class MessageType(enum.IntEnum):
    """First byte of every message."""

    INFO = 0x01
    CONTROLS = 0x10
    STATUS = 0x11
    CMD_MIX = 0x20
    CMD_ANALYZE = 0x21
    CMD_RENDER = 0x22
    CMD_PREVIEW = 0x23
    CMD_CANCEL = 0x24
    CMD_DELETE = 0x25
    COMMAND_REPLY = 0x2F
    LIST_REQUEST = 0x30
    LIBRARY_PAGE = 0x31
    UPLOAD_BEGIN = 0x40
    DOWNLOAD_BEGIN = 0x41
    TRANSFER_QUERY = 0x42
    UPLOAD_COMMIT = 0x43
    DOWNLOAD_ACK = 0x44
    TRANSFER_ABORT = 0x45
    TRANSFER_READY = 0x48
    TRANSFER_ACK = 0x49
    TRANSFER_NACK = 0x4A
    TRANSFER_DONE = 0x4B
    DATA = 0x50


# ----------------------------------------------------------------------------------------------
# Field readers and writers


class _Reader:
    """Reads fixed fields from a message, raising typed errors instead of struct/Unicode errors."""

    def __init__(self, data: bytes, name: str):
        self.data = memoryview(data)
        self.pos = 1  # after the type byte
        self.name = name

    def _take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise TruncatedMessageError(
                f"{self.name}: ends at byte {len(self.data)} while reading {what} "
                f"({n} bytes at offset {self.pos}); the full message is longer (see protocol.md)"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        s = struct.Struct("<" + fmt)
        return s.unpack(self._take(s.size, what))

    def u8(self, what: str) -> int:
        return self.unpack("B", what)[0]

    def u16(self, what: str) -> int:
        return self.unpack("H", what)[0]

    def u32(self, what: str) -> int:
        return self.unpack("I", what)[0]

    def raw(self, n: int, what: str) -> bytes:
        return bytes(self._take(n, what))

    def text(self, what: str, max_bytes: int = 255) -> str:
        n = self.u8(f"{what} length")
        if n > max_bytes:
            raise MalformedMessageError(f"{self.name}: {what} is {n} bytes; at most {max_bytes} are allowed")
        raw = self._take(n, what)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessageError(f"{self.name}: {what} is not UTF-8 ({exc.reason}); send UTF-8 text") from None

    def rest(self) -> bytes:
        out = bytes(self.data[self.pos :])
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise OversizedMessageError(
                f"{self.name}: {len(self.data) - self.pos} unexpected bytes after the last field "
                f"(message is {len(self.data)} bytes, expected {self.pos})"
            )

    def enum(self, cls, what: str):
        value = self.u8(what)
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(f"{m.value}={m.name}" for m in cls)
            raise MalformedMessageError(f"{self.name}: {what} {value} is unknown; use one of {allowed}") from None


def _text(value: str, what: str, max_bytes: int = 255) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > max_bytes:
        raise InvalidValueError(f"{what} is {len(raw)} bytes of UTF-8; at most {max_bytes} fit")
    return bytes([len(raw)]) + raw


def _truncate_text(value: str, max_bytes: int) -> str:
    """Cut UTF-8 text to ``max_bytes`` without splitting a character."""
    raw = value.encode("utf-8")[:max_bytes]
    return raw.decode("utf-8", "ignore")


def _check_range(value: int, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidValueError(f"{what} {value!r} is out of range; use an integer in {lo}..{hi}")
    return value


def check_name(name: str, kind: FileKind | None = None) -> str:
    """Return ``name`` if it is a safe file name for ``kind``; raise :class:`BadNameError` otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or len(name.encode()) > MAX_NAME_LENGTH:
        raise BadNameError(
            f"file name {name!r} is not allowed; use 1..{MAX_NAME_LENGTH} letters, digits, '.', '-' or '_', "
            "not starting with '.', e.g. take-01.m4a"
        )
    if ".." in name:
        raise BadNameError(f"file name {name!r} contains '..'; use a plain name such as take-01.m4a")
    if kind is not None:
        ext = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if ext not in kind.extensions:
            raise BadNameError(
                f"file name {name!r} has extension {ext or 'none'!r}, not allowed for a {kind.name.lower()}; "
                f"use one of {', '.join(kind.extensions)}"
            )
    return name


#: A plan's render report (the latest full render's report, its ``loudness`` measured on the written
#: mix) is the plan-kind file with this suffix beside the plan: ``my-take.json`` -> ``my-take.report.json``.
RENDER_REPORT_SUFFIX = ".report.json"


def render_report_name(plan_name: str) -> str:
    """The name of the render report the box keeps beside the plan ``plan_name``.

    >>> render_report_name("my-take.json")
    'my-take.report.json'
    """
    stem = plan_name[: -len(".json")] if plan_name.lower().endswith(".json") else plan_name
    return stem + RENDER_REPORT_SUFFIX


def is_render_report(name: str) -> bool:
    """Is the plan-kind file ``name`` a plan's render report rather than a plan?

    >>> is_render_report("my-take.report.json"), is_render_report("my-take.json")
    (True, False)
    """
    return name.lower().endswith(RENDER_REPORT_SUFFIX)


# ----------------------------------------------------------------------------------------------
# Messages

_REGISTRY: dict[int, type[Message]] = {}


class Message:
    """Base of all messages: ``encode()`` to bytes, :func:`decode` back."""

    TYPE: ClassVar[enum.IntEnum]  # a MessageType, or a 1.1 block's own enum (audio, updates)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            _REGISTRY[int(cls.TYPE)] = cls

    def encode(self) -> bytes:
        data = bytes([self.TYPE]) + self._encode_fields()
        if len(data) > MAX_MESSAGE_SIZE:
            raise OversizedMessageError(
                f"{type(self).__name__} encodes to {len(data)} bytes; at most {MAX_MESSAGE_SIZE} fit in one attribute"
            )
        return data

    def _encode_fields(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def _decode_fields(cls, r: _Reader) -> Message:  # pragma: no cover - abstract
        raise NotImplementedError


def decode(data: bytes | bytearray | memoryview, *, allowed: tuple[type[Message], ...] | None = None) -> Message:
    """Decode one message; raise a :class:`MessageError` subclass (never anything else) when it is bad.

    ``allowed`` limits the message classes accepted (each characteristic takes only some).
    """
    data = bytes(data)
    if len(data) == 0:
        raise TruncatedMessageError("empty message; every message starts with a one-byte type (see protocol.md)")
    if len(data) > MAX_MESSAGE_SIZE:
        raise OversizedMessageError(f"message is {len(data)} bytes; at most {MAX_MESSAGE_SIZE} are allowed")
    cls = _REGISTRY.get(data[0])
    if cls is None:
        raise UnknownMessageTypeError(
            f"message type 0x{data[0]:02x} is not a Melisma message; known types are "
            f"0x{min(_REGISTRY):02x}..0x{max(_REGISTRY):02x} (see protocol.md)"
        )
    if allowed is not None and cls not in allowed:
        raise UnknownMessageTypeError(
            f"{cls.__name__} (0x{data[0]:02x}) is not accepted here; send one of "
            f"{', '.join(c.__name__ for c in allowed)}"
        )
    r = _Reader(data, cls.__name__)
    try:
        msg = cls._decode_fields(r)
    except MessageError:
        raise
    except (ValueError, TypeError) as exc:  # a value check in a message's constructor
        raise MalformedMessageError(f"{cls.__name__}: {exc}") from None
    r.end()
    return msg


#: Flag bits an Info message may carry (bit 0: passkey display); decode refuses any other bit.
INFO_KNOWN_FLAGS = 0x01


@dataclass(frozen=True)
class Info(Message):
    """What the box is and what it accepts (read from the info characteristic after bonding)."""

    TYPE: ClassVar = MessageType.INFO
    version: tuple[int, int] = PROTOCOL_VERSION
    firmware: str = ""
    max_file_size: int = MAX_FILE_SIZE
    max_name_length: int = MAX_NAME_LENGTH
    passkey_display: bool = False  # True: pairing uses passkey entry; False: Just Works

    def _encode_fields(self) -> bytes:
        return (
            struct.pack("<BBIBB", self.version[0], self.version[1], self.max_file_size, self.max_name_length,
                        int(self.passkey_display))
            + _text(self.firmware, "firmware version", 32)
        )

    @classmethod
    def _decode_fields(cls, r):
        major, minor, max_size, max_name, flags = r.unpack("BBIBB", "info fields")
        if flags & ~INFO_KNOWN_FLAGS:
            raise MalformedMessageError(f"Info: flags 0x{flags:02x} set bits this protocol does not define "
                                        f"(known: 0x{INFO_KNOWN_FLAGS:02x})")
        return cls((major, minor), r.text("firmware", 32), max_size, max_name, bool(flags & 1))


@dataclass(frozen=True)
class Controls(Message):
    """Style preset and semantic sliders (−1..+1, carried in hundredths)."""

    TYPE: ClassVar = MessageType.CONTROLS
    style: Style = Style.NEUTRAL
    sliders: dict = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "style", Style(self.style) if not isinstance(self.style, str)
                           else _style_from_name(self.style))
        clean = {}
        for name in SLIDER_NAMES:
            value = float(self.sliders.get(name, 0.0))
            if not -1.0 <= value <= 1.0 or value != value:
                raise InvalidValueError(f"slider {name}={value!r} is out of range; use a number in -1..+1")
            clean[name] = round(value * 100) / 100.0
        unknown = set(self.sliders) - set(SLIDER_NAMES)
        if unknown:
            raise InvalidValueError(f"unknown slider(s) {sorted(unknown)}; the sliders are {', '.join(SLIDER_NAMES)}")
        object.__setattr__(self, "sliders", clean)

    def __hash__(self):
        return hash((self.style, tuple(self.sliders.items())))

    def _encode_fields(self) -> bytes:
        return bytes([self.style]) + struct.pack("<6b", *(round(self.sliders[n] * 100) for n in SLIDER_NAMES))

    @classmethod
    def _decode_fields(cls, r):
        style = r.enum(Style, "style")
        values = r.unpack("6b", "sliders")
        for name, v in zip(SLIDER_NAMES, values, strict=False):
            if not -100 <= v <= 100:
                raise MalformedMessageError(f"Controls: slider {name} is {v}/100; use -100..100 (hundredths of -1..+1)")
        return cls(style, {n: v / 100.0 for n, v in zip(SLIDER_NAMES, values, strict=False)})

    def engine_sliders(self) -> dict[str, float]:
        """Sliders for the engine: the ones moved away from their centre (0 is the engine's default)."""
        return {k: v for k, v in self.sliders.items() if v != 0.0}


def _style_from_name(name: str) -> Style:
    try:
        return Style[name.upper()]
    except KeyError:
        raise InvalidValueError(
            f"unknown style {name!r}; use one of {', '.join(s.engine_name for s in Style)}"
        ) from None


@dataclass(frozen=True)
class Status(Message):
    """Box state and the current (or last) job; notified whenever it changes."""

    TYPE: ClassVar = MessageType.STATUS
    state: DeviceState = DeviceState.IDLE
    job_id: int = 0
    job_kind: JobKind = JobKind.NONE
    job_state: JobState = JobState.NONE
    progress: float = 0.0  # 0..1, carried in 1/10000
    queued: int = 0  # jobs waiting behind the current one
    error: ErrorCode = ErrorCode.OK
    stage: str = ""  # engine stage name, at most 24 bytes

    def __post_init__(self):
        _check_range(self.job_id, 0, 0xFFFF, "job id")
        _check_range(self.queued, 0, 0xFF, "queued jobs")
        if not 0.0 <= self.progress <= 1.0:
            raise InvalidValueError(f"progress {self.progress!r} is out of range; use 0..1")
        object.__setattr__(self, "stage", _truncate_text(self.stage, 24))

    def _encode_fields(self) -> bytes:
        return struct.pack("<BHBBHBB", self.state, self.job_id, self.job_kind, self.job_state,
                           round(self.progress * 10000), self.queued, self.error) + _text(self.stage, "stage", 24)

    @classmethod
    def _decode_fields(cls, r):
        state = r.enum(DeviceState, "state")
        job_id = r.u16("job id")
        kind = r.enum(JobKind, "job kind")
        jstate = r.enum(JobState, "job state")
        progress = r.u16("progress")
        if progress > 10000:
            raise MalformedMessageError(f"Status: progress {progress}/10000 is over 10000")
        queued = r.u8("queued")
        error = r.enum(ErrorCode, "error")
        stage = r.text("stage", 24)
        if len(stage.encode()) > 24:
            raise MalformedMessageError(f"Status: stage is {len(stage.encode())} bytes; at most 24")
        return cls(state, job_id, kind, jstate, progress / 10000, queued, error, stage)


# --- commands (written to the command characteristic; answered by a CommandReply notification)


@dataclass(frozen=True)
class _Request(Message):
    request_id: int

    def __post_init__(self):
        _check_range(self.request_id, 0, 0xFFFF, "request id")


#: Bit 0 of the optional trailing flags byte of Mix and Analyze: accept the best alignment guess.
JOB_FLAG_ACCEPT_ALIGNMENT_GUESS = 0x01


def _job_flags(r: _Reader) -> bool:
    """The optional trailing flags byte of Mix/Analyze (absent = 0): True when the guess is accepted."""
    if r.pos >= len(r.data):
        return False
    flags = r.u8("job flags")
    if flags & ~JOB_FLAG_ACCEPT_ALIGNMENT_GUESS:
        raise MalformedMessageError(
            f"{r.name}: job flags 0x{flags:02x} has unknown bits; only bit 0 (accept alignment guess) is defined"
        )
    return bool(flags & JOB_FLAG_ACCEPT_ALIGNMENT_GUESS)


@dataclass(frozen=True)
class MixCommand(_Request):
    """Analyze and render ``take`` over ``backing`` into the mix ``out`` with the current controls."""

    TYPE: ClassVar = MessageType.CMD_MIX
    take: str = ""
    backing: str = ""
    out: str = ""
    #: Mix even when the take's offset cannot be measured, at the best guess (an additive field:
    #: a trailing flags byte, bit 0, sent only when set, so older boxes see the same message as before).
    accept_alignment_guess: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_name(self.take, FileKind.TAKE)
        check_name(self.backing, FileKind.BACKING)
        check_name(self.out, FileKind.MIX)

    def _encode_fields(self):
        flags = bytes([JOB_FLAG_ACCEPT_ALIGNMENT_GUESS]) if self.accept_alignment_guess else b""
        return (
            struct.pack("<H", self.request_id) + b"".join(_text(s, "name") for s in (self.take, self.backing, self.out)) + flags
        )

    @classmethod
    def _decode_fields(cls, r):
        head = (r.u16("request id"), r.text("take"), r.text("backing"), r.text("out"))
        return cls(*head, accept_alignment_guess=_job_flags(r))


@dataclass(frozen=True)
class AnalyzeCommand(_Request):
    """Analyze ``take`` over ``backing`` into the plan ``plan``."""

    TYPE: ClassVar = MessageType.CMD_ANALYZE
    take: str = ""
    backing: str = ""
    plan: str = ""
    #: Mix even when the take's offset cannot be measured, at the best guess (an additive field:
    #: a trailing flags byte, bit 0, sent only when set, so older boxes see the same message as before).
    accept_alignment_guess: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_name(self.take, FileKind.TAKE)
        check_name(self.backing, FileKind.BACKING)
        check_name(self.plan, FileKind.PLAN)

    def _encode_fields(self):
        flags = bytes([JOB_FLAG_ACCEPT_ALIGNMENT_GUESS]) if self.accept_alignment_guess else b""
        return (
            struct.pack("<H", self.request_id) + b"".join(_text(s, "name") for s in (self.take, self.backing, self.plan)) + flags
        )

    @classmethod
    def _decode_fields(cls, r):
        head = (r.u16("request id"), r.text("take"), r.text("backing"), r.text("plan"))
        return cls(*head, accept_alignment_guess=_job_flags(r))


@dataclass(frozen=True)
class RenderCommand(_Request):
    """Render the plan ``plan`` into the mix ``out`` with the current controls."""

    TYPE: ClassVar = MessageType.CMD_RENDER
    plan: str = ""
    out: str = ""

    def __post_init__(self):
        super().__post_init__()
        check_name(self.plan, FileKind.PLAN)
        check_name(self.out, FileKind.MIX)

    def _encode_fields(self):
        return struct.pack("<H", self.request_id) + _text(self.plan, "plan") + _text(self.out, "out")

    @classmethod
    def _decode_fields(cls, r):
        return cls(r.u16("request id"), r.text("plan"), r.text("out"))


@dataclass(frozen=True)
class PreviewCommand(_Request):
    """Render ``duration_ms`` from ``start_ms`` of the plan into the preview ``out``."""

    TYPE: ClassVar = MessageType.CMD_PREVIEW
    plan: str = ""
    out: str = ""
    start_ms: int = 0
    duration_ms: int = 10_000

    def __post_init__(self):
        super().__post_init__()
        check_name(self.plan, FileKind.PLAN)
        check_name(self.out, FileKind.PREVIEW)
        _check_range(self.start_ms, 0, 0xFFFFFFFF, "preview start (ms)")
        _check_range(self.duration_ms, 1, MAX_PREVIEW_MS, "preview duration (ms)")

    def _encode_fields(self):
        return (
            struct.pack("<H", self.request_id)
            + _text(self.plan, "plan")
            + _text(self.out, "out")
            + struct.pack("<II", self.start_ms, self.duration_ms)
        )

    @classmethod
    def _decode_fields(cls, r):
        rid, plan, out = r.u16("request id"), r.text("plan"), r.text("out")
        start, duration = r.unpack("II", "preview start and duration")
        return cls(rid, plan, out, start, duration)


@dataclass(frozen=True)
class CancelCommand(_Request):
    """Cancel a queued or running job."""

    TYPE: ClassVar = MessageType.CMD_CANCEL
    job_id: int = 0

    def __post_init__(self):
        super().__post_init__()
        _check_range(self.job_id, 1, 0xFFFF, "job id")

    def _encode_fields(self):
        return struct.pack("<HH", self.request_id, self.job_id)

    @classmethod
    def _decode_fields(cls, r):
        return cls(*r.unpack("HH", "request id and job id"))


@dataclass(frozen=True)
class DeleteCommand(_Request):
    """Delete a stored file."""

    TYPE: ClassVar = MessageType.CMD_DELETE
    kind: FileKind = FileKind.TAKE
    name: str = ""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "kind", FileKind(self.kind))
        check_name(self.name, self.kind)

    def _encode_fields(self):
        return struct.pack("<HB", self.request_id, self.kind) + _text(self.name, "name")

    @classmethod
    def _decode_fields(cls, r):
        return cls(r.u16("request id"), r.enum(FileKind, "kind"), r.text("name"))


COMMANDS = (MixCommand, AnalyzeCommand, RenderCommand, PreviewCommand, CancelCommand, DeleteCommand)


@dataclass(frozen=True)
class CommandReply(Message):
    """The box's answer to a command: an error code, the job it queued (0 if none) and a short detail."""

    TYPE: ClassVar = MessageType.COMMAND_REPLY
    request_id: int = 0
    error: ErrorCode = ErrorCode.OK
    job_id: int = 0
    detail: str = ""

    #: Detail text is cut to this many bytes so the reply fits a notification at the minimum MTU.
    MAX_DETAIL: ClassVar[int] = MAX_NOTIFICATION_SIZE - 7

    def __post_init__(self):
        _check_range(self.request_id, 0, 0xFFFF, "request id")
        _check_range(self.job_id, 0, 0xFFFF, "job id")
        object.__setattr__(self, "error", ErrorCode(self.error))
        object.__setattr__(self, "detail", _truncate_text(self.detail, self.MAX_DETAIL))

    def _encode_fields(self):
        return struct.pack("<HBH", self.request_id, self.error, self.job_id) + _text(self.detail, "detail")

    @classmethod
    def _decode_fields(cls, r):
        rid = r.u16("request id")
        err = r.enum(ErrorCode, "error")
        job = r.u16("job id")
        return cls(rid, err, job, r.text("detail", cls.MAX_DETAIL))


# --- library


@dataclass(frozen=True)
class ListRequest(Message):
    """Choose what the next read of the library characteristic returns."""

    TYPE: ClassVar = MessageType.LIST_REQUEST
    kind: int = 0  # 0: all kinds, else a FileKind
    start: int = 0

    def __post_init__(self):
        if self.kind != 0:
            object.__setattr__(self, "kind", FileKind(self.kind))
        _check_range(self.start, 0, 0xFFFF, "start index")

    def _encode_fields(self):
        return struct.pack("<BH", self.kind, self.start)

    @classmethod
    def _decode_fields(cls, r):
        kind, start = r.unpack("BH", "kind and start")
        if kind != 0 and kind not in FileKind._value2member_map_:
            raise MalformedMessageError(f"ListRequest: kind {kind} is unknown; use 0 (all) or a FileKind 1..5")
        return cls(kind, start)


@dataclass(frozen=True)
class LibraryEntry:
    """One file in the box's library: kind, name and size."""

    kind: FileKind
    name: str
    size: int
    sha256: bytes

    def __post_init__(self):
        object.__setattr__(self, "kind", FileKind(self.kind))
        check_name(self.name, self.kind)
        _check_range(self.size, 0, 0xFFFFFFFF, "file size")
        if len(self.sha256) != 32:
            raise InvalidValueError(f"sha256 is {len(self.sha256)} bytes; give the 32-byte SHA-256 digest")

    def encode(self) -> bytes:
        return bytes([self.kind]) + _text(self.name, "name", MAX_NAME_LENGTH) + struct.pack("<I", self.size) + self.sha256

    @property
    def encoded_size(self) -> int:
        return 1 + 1 + len(self.name.encode()) + 4 + 32


@dataclass(frozen=True)
class LibraryPage(Message):
    """Up to a page of library entries; ``next_start`` is 0xFFFF after the last page."""

    TYPE: ClassVar = MessageType.LIBRARY_PAGE
    total: int = 0
    next_start: int = 0xFFFF
    entries: tuple = ()

    END: ClassVar[int] = 0xFFFF

    def _encode_fields(self):
        return struct.pack("<HHB", self.total, self.next_start, len(self.entries)) + b"".join(e.encode() for e in self.entries)

    @classmethod
    def _decode_fields(cls, r):
        total, nxt, count = r.unpack("HHB", "page header")
        entries = []
        for i in range(count):
            kind = r.enum(FileKind, f"entry {i} kind")
            name = r.text(f"entry {i} name", MAX_NAME_LENGTH)
            check_name(name, kind)  # a box must never hand the app a path such as ../../etc/passwd
            size = r.u32(f"entry {i} size")
            sha = r.raw(32, f"entry {i} sha256")
            entries.append(LibraryEntry(kind, name, size, sha))
        return cls(total, nxt, tuple(entries))

    @classmethod
    def fit(cls, entries: list[LibraryEntry], start: int) -> LibraryPage:
        """The page of ``entries`` from ``start`` that fits in one message."""
        room = MAX_MESSAGE_SIZE - 6
        page: list[LibraryEntry] = []
        i = start
        while i < len(entries) and len(page) < 255 and entries[i].encoded_size <= room:
            room -= entries[i].encoded_size
            page.append(entries[i])
            i += 1
        nxt = i if i < len(entries) else cls.END
        return cls(len(entries), nxt, tuple(page))


# --- transfer


@dataclass(frozen=True)
class UploadBegin(Message):
    """Start or resume uploading a file of ``size`` bytes whose SHA-256 is ``sha256``."""

    TYPE: ClassVar = MessageType.UPLOAD_BEGIN
    request_id: int = 0
    kind: FileKind = FileKind.TAKE
    name: str = ""
    size: int = 0
    sha256: bytes = b"\0" * 32

    def __post_init__(self):
        _check_range(self.request_id, 0, 0xFFFF, "request id")
        object.__setattr__(self, "kind", FileKind(self.kind))
        check_name(self.name, self.kind)
        _check_range(self.size, 0, 0xFFFFFFFF, "file size")
        if len(self.sha256) != 32:
            raise InvalidValueError(f"sha256 is {len(self.sha256)} bytes; give the 32-byte SHA-256 digest")

    def _encode_fields(self):
        return (
            struct.pack("<HB", self.request_id, self.kind)
            + _text(self.name, "name")
            + struct.pack("<I", self.size)
            + bytes(self.sha256)
        )

    @classmethod
    def _decode_fields(cls, r):
        rid = r.u16("request id")
        kind = r.enum(FileKind, "kind")
        name = r.text("name")
        return cls(rid, kind, name, r.u32("size"), r.raw(32, "sha256"))


@dataclass(frozen=True)
class DownloadBegin(Message):
    """Start or resume downloading a stored file from ``offset``."""

    TYPE: ClassVar = MessageType.DOWNLOAD_BEGIN
    request_id: int = 0
    kind: FileKind = FileKind.MIX
    name: str = ""
    offset: int = 0

    def __post_init__(self):
        _check_range(self.request_id, 0, 0xFFFF, "request id")
        object.__setattr__(self, "kind", FileKind(self.kind))
        check_name(self.name, self.kind)
        _check_range(self.offset, 0, 0xFFFFFFFF, "offset")

    def _encode_fields(self):
        return struct.pack("<HB", self.request_id, self.kind) + _text(self.name, "name") + struct.pack("<I", self.offset)

    @classmethod
    def _decode_fields(cls, r):
        rid = r.u16("request id")
        kind = r.enum(FileKind, "kind")
        name = r.text("name")
        return cls(rid, kind, name, r.u32("offset"))


@dataclass(frozen=True)
class _TransferRef(Message):
    transfer_id: int = 0

    def __post_init__(self):
        _check_range(self.transfer_id, 1, 0xFF, "transfer id")

    def _encode_fields(self):
        return bytes([self.transfer_id])

    @classmethod
    def _decode_fields(cls, r):
        return cls(r.u8("transfer id"))


@dataclass(frozen=True)
class TransferQuery(_TransferRef):
    """Ask where an upload stands; answered by TransferAck with the next offset the box expects."""

    TYPE: ClassVar = MessageType.TRANSFER_QUERY


@dataclass(frozen=True)
class UploadCommit(_TransferRef):
    """All bytes sent: check the SHA-256 and store the file (answered by TransferDone)."""

    TYPE: ClassVar = MessageType.UPLOAD_COMMIT


@dataclass(frozen=True)
class TransferAbort(_TransferRef):
    """Stop a transfer; an upload's partial data is kept for a later resume."""

    TYPE: ClassVar = MessageType.TRANSFER_ABORT


@dataclass(frozen=True)
class _TransferOffset(Message):
    transfer_id: int = 0
    offset: int = 0

    def __post_init__(self):
        _check_range(self.transfer_id, 1, 0xFF, "transfer id")
        _check_range(self.offset, 0, 0xFFFFFFFF, "offset")

    def _encode_fields(self):
        return struct.pack("<BI", self.transfer_id, self.offset)

    @classmethod
    def _decode_fields(cls, r):
        return cls(*r.unpack("BI", "transfer id and offset"))


@dataclass(frozen=True)
class DownloadAck(_TransferOffset):
    """Client: I hold every byte below ``offset``; send on from there (also a re-send request)."""

    TYPE: ClassVar = MessageType.DOWNLOAD_ACK


@dataclass(frozen=True)
class TransferAck(_TransferOffset):
    """Box: I hold every byte of the upload below ``offset``."""

    TYPE: ClassVar = MessageType.TRANSFER_ACK


@dataclass(frozen=True)
class TransferNack(Message):
    """Box: a chunk was rejected (``error``); re-send from ``offset``."""

    TYPE: ClassVar = MessageType.TRANSFER_NACK
    transfer_id: int = 0
    offset: int = 0
    error: ErrorCode = ErrorCode.BAD_CHECKSUM

    def __post_init__(self):
        _check_range(self.transfer_id, 1, 0xFF, "transfer id")
        _check_range(self.offset, 0, 0xFFFFFFFF, "offset")
        object.__setattr__(self, "error", ErrorCode(self.error))

    def _encode_fields(self):
        return struct.pack("<BIB", self.transfer_id, self.offset, self.error)

    @classmethod
    def _decode_fields(cls, r):
        tid, off = r.unpack("BI", "transfer id and offset")
        return cls(tid, off, r.enum(ErrorCode, "error"))


@dataclass(frozen=True)
class TransferReady(Message):
    """Box's answer to UploadBegin/DownloadBegin.

    For an upload, ``offset`` is where the client resumes (bytes already held); for a download it
    echoes the requested offset. ``size`` and ``sha256`` describe the whole file. ``chunk_size``
    is the largest chunk payload for this link, ``window`` the chunks allowed in flight.
    """

    TYPE: ClassVar = MessageType.TRANSFER_READY
    request_id: int = 0
    error: ErrorCode = ErrorCode.OK
    transfer_id: int = 0
    offset: int = 0
    size: int = 0
    sha256: bytes = b"\0" * 32
    chunk_size: int = 0
    window: int = DEFAULT_WINDOW_CHUNKS

    def __post_init__(self):
        _check_range(self.request_id, 0, 0xFFFF, "request id")
        object.__setattr__(self, "error", ErrorCode(self.error))
        _check_range(self.transfer_id, 0, 0xFF, "transfer id")
        _check_range(self.offset, 0, 0xFFFFFFFF, "offset")
        _check_range(self.size, 0, 0xFFFFFFFF, "size")
        _check_range(self.chunk_size, 0, MAX_CHUNK_PAYLOAD, "chunk size")
        _check_range(self.window, 0, 0xFFFF, "window")
        if len(self.sha256) != 32:
            raise InvalidValueError(f"sha256 is {len(self.sha256)} bytes; give the 32-byte digest")

    def _encode_fields(self):
        return (
            struct.pack("<HBBII", self.request_id, self.error, self.transfer_id, self.offset, self.size)
            + bytes(self.sha256)
            + struct.pack("<HH", self.chunk_size, self.window)
        )

    @classmethod
    def _decode_fields(cls, r):
        rid = r.u16("request id")
        err = r.enum(ErrorCode, "error")
        tid, off, size = r.unpack("BII", "transfer id, offset and size")
        sha = r.raw(32, "sha256")
        chunk, window = r.unpack("HH", "chunk size and window")
        if chunk > MAX_CHUNK_PAYLOAD:
            raise MalformedMessageError(f"TransferReady: chunk size {chunk} is over {MAX_CHUNK_PAYLOAD}")
        return cls(rid, err, tid, off, size, sha, chunk, window)


@dataclass(frozen=True)
class TransferDone(Message):
    """Box: the upload was stored (``error`` OK) or refused; or a download finished/failed."""

    TYPE: ClassVar = MessageType.TRANSFER_DONE
    transfer_id: int = 0
    error: ErrorCode = ErrorCode.OK
    detail: str = ""

    def __post_init__(self):
        _check_range(self.transfer_id, 0, 0xFF, "transfer id")
        object.__setattr__(self, "error", ErrorCode(self.error))
        object.__setattr__(self, "detail", _truncate_text(self.detail, MAX_NOTIFICATION_SIZE - 4))

    def _encode_fields(self):
        return struct.pack("<BB", self.transfer_id, self.error) + _text(self.detail, "detail")

    @classmethod
    def _decode_fields(cls, r):
        tid = r.u8("transfer id")
        return cls(tid, r.enum(ErrorCode, "error"), r.text("detail", MAX_NOTIFICATION_SIZE - 4))


@dataclass(frozen=True)
class Data(Message):
    """One chunk: ``payload`` at ``offset`` of the transfer, with its CRC-32 (zlib.crc32)."""

    TYPE: ClassVar = MessageType.DATA
    transfer_id: int = 0
    offset: int = 0
    payload: bytes = b""
    crc32: int | None = None  # computed from payload when not given

    def __post_init__(self):
        _check_range(self.transfer_id, 1, 0xFF, "transfer id")
        _check_range(self.offset, 0, 0xFFFFFFFF, "offset")
        if len(self.payload) > MAX_CHUNK_PAYLOAD:
            raise OversizedMessageError(f"chunk payload is {len(self.payload)} bytes; at most {MAX_CHUNK_PAYLOAD}")
        if self.crc32 is None:
            object.__setattr__(self, "crc32", zlib.crc32(self.payload))

    @property
    def crc_ok(self) -> bool:
        return zlib.crc32(self.payload) == self.crc32

    def _encode_fields(self):
        return struct.pack("<BII", self.transfer_id, self.offset, self.crc32) + bytes(self.payload)

    @classmethod
    def _decode_fields(cls, r):
        tid, off, crc = r.unpack("BII", "chunk header")
        if tid == 0:
            raise MalformedMessageError("Data: transfer id 0 is reserved; use the id from TransferReady")
        return cls(tid, off, r.rest(), crc)


TRANSFER_REQUESTS = (UploadBegin, DownloadBegin, TransferQuery, UploadCommit, DownloadAck, TransferAbort)
TRANSFER_EVENTS = (TransferReady, TransferAck, TransferNack, TransferDone)


# ----------------------------------------------------------------------------------------------
# Helpers for both ends


def chunk_payload_size(att_mtu: int) -> int:
    """Largest chunk payload that fits one ATT write/notification at ``att_mtu``."""
    if att_mtu < MIN_ATT_MTU:
        raise InvalidValueError(f"ATT MTU {att_mtu} is below the protocol minimum {MIN_ATT_MTU}; negotiate a larger MTU")
    return min(att_mtu - 3 - DATA_HEADER_SIZE, MAX_CHUNK_PAYLOAD)


def sha256_file(path) -> bytes:
    """SHA-256 digest (32 bytes) of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def att_error_code(code: ErrorCode) -> int:
    """The ATT application error (0x80 + code) the box answers a rejected write with."""
    return ATT_APPLICATION_ERROR_BASE + int(code)


def error_from_att(att_code: int) -> ErrorCode | None:
    """The protocol ErrorCode inside an ATT application error, or None for a standard ATT error."""
    if ATT_APPLICATION_ERROR_BASE <= att_code < ATT_APPLICATION_ERROR_BASE + 0x20:
        try:
            return ErrorCode(att_code - ATT_APPLICATION_ERROR_BASE)
        except ValueError:
            return None
    return None


# ==============================================================================================
# Protocol 1.1: the box's own audio (calibrate, record/stop, monitor on/off, play, levels, xruns,
# Bluetooth-output warning). Everything here is new in 1.1 and optional: a 1.0 box answers these
# commands with UNKNOWN_TYPE and has no audio status characteristic; a client checks
# ``box_version >= AUDIO_MIN_VERSION`` first. Kept in one block of its own, apart from any other
# 1.1 additions; nothing above is renumbered.

#: First protocol version with the audio commands and the audio status characteristic.
AUDIO_MIN_VERSION = (1, 1)
#: read, notify (encrypted): :class:`AudioStatus`, notified on every change and every
#: :data:`AUDIO_STATUS_INTERVAL_S` while audio runs (level meters).
AUDIO_STATUS_CHAR_UUID = uuid_for(0x0020)
AUDIO_STATUS_INTERVAL_S = 0.25
#: Longest calibration timeout and recording a client may ask for.
MAX_CALIBRATION_TIMEOUT_S = 60.0
MAX_RECORD_S = 900
#: Level carried when there is no signal (dBFS, int8).
NO_LEVEL_DB = -128


class AudioMessageType(enum.IntEnum):
    """First byte of the 1.1 audio messages (0x70-0x7F)."""

    CMD_AUDIO_CALIBRATE = 0x70
    CMD_AUDIO_RECORD = 0x71
    CMD_AUDIO_STOP = 0x72
    CMD_AUDIO_MONITOR = 0x73
    CMD_AUDIO_PLAY = 0x74
    AUDIO_STATUS = 0x7F


class AudioMode(enum.IntEnum):
    """What the box's own audio is doing."""

    IDLE = 0
    CALIBRATING = 1
    RECORDING = 2
    MONITORING = 3
    PLAYING = 4


class AudioFlags(enum.IntFlag):
    """Warnings about the box's own audio (clipping, a Bluetooth output, ...)."""

    NONE = 0
    BLUETOOTH_OUTPUT = 1  # the output is a Bluetooth sink: monitoring is unusable, warn the user
    CALIBRATED = 2  # a calibration is stored for the current devices, rate and block
    CALIBRATION_RELIABLE = 4
    CLIPPING = 8  # the input reached full scale since the last status


@dataclass(frozen=True)
class AudioCalibrateCommand(_Request):
    """Measure the round trip by loopback (output to input), store it; progress in :class:`AudioStatus`."""

    TYPE: ClassVar = AudioMessageType.CMD_AUDIO_CALIBRATE
    timeout_s: float = 10.0  # carried in tenths of a second

    def __post_init__(self):
        super().__post_init__()
        if not 0.1 <= self.timeout_s <= MAX_CALIBRATION_TIMEOUT_S:
            raise InvalidValueError(
                f"calibration timeout {self.timeout_s!r} s is out of range; use 0.1..{MAX_CALIBRATION_TIMEOUT_S:g}"
            )

    def _encode_fields(self):
        return struct.pack("<HH", self.request_id, round(self.timeout_s * 10))

    @classmethod
    def _decode_fields(cls, r):
        rid, tenths = r.unpack("HH", "request id and timeout")
        return cls(rid, tenths / 10)


@dataclass(frozen=True)
class AudioRecordCommand(_Request):
    """Play the stored backing ``backing`` and record the take ``take`` (0 s: the whole backing)."""

    TYPE: ClassVar = AudioMessageType.CMD_AUDIO_RECORD
    backing: str = ""
    take: str = ""
    max_seconds: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_name(self.backing, FileKind.BACKING)
        check_name(self.take, FileKind.TAKE)
        _check_range(self.max_seconds, 0, MAX_RECORD_S, "recording length (s)")

    def _encode_fields(self):
        return (
            struct.pack("<H", self.request_id)
            + _text(self.backing, "backing")
            + _text(self.take, "take")
            + struct.pack("<H", self.max_seconds)
        )

    @classmethod
    def _decode_fields(cls, r):
        rid, backing, take = r.u16("request id"), r.text("backing"), r.text("take")
        return cls(rid, backing, take, r.u16("recording length"))


@dataclass(frozen=True)
class AudioStopCommand(_Request):
    """Stop whatever audio runs (a recording keeps what was recorded so far)."""

    TYPE: ClassVar = AudioMessageType.CMD_AUDIO_STOP

    def _encode_fields(self):
        return struct.pack("<H", self.request_id)

    @classmethod
    def _decode_fields(cls, r):
        return cls(r.u16("request id"))


@dataclass(frozen=True)
class AudioMonitorCommand(_Request):
    """Live monitoring on/off; ``correction`` 0..1 (hundredths); ``backing``: a stored backing or ""."""

    TYPE: ClassVar = AudioMessageType.CMD_AUDIO_MONITOR
    on: bool = True
    correction: float = 0.0
    backing: str = ""

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.correction <= 1.0:
            raise InvalidValueError(f"correction {self.correction!r} is out of range; use 0..1")
        object.__setattr__(self, "correction", round(self.correction * 100) / 100)
        if self.backing:
            check_name(self.backing, FileKind.BACKING)

    def _encode_fields(self):
        return struct.pack("<HBB", self.request_id, int(self.on), round(self.correction * 100)) + _text(self.backing, "backing")

    @classmethod
    def _decode_fields(cls, r):
        rid, on, corr = r.unpack("HBB", "request id, on and correction")
        if on > 1 or corr > 100:
            raise MalformedMessageError(f"AudioMonitorCommand: on={on} (0/1), correction={corr}/100 (0..100)")
        return cls(rid, bool(on), corr / 100, r.text("backing"))


@dataclass(frozen=True)
class AudioPlayCommand(_Request):
    """Play a stored mix or preview (or any stored audio) through the box's output."""

    TYPE: ClassVar = AudioMessageType.CMD_AUDIO_PLAY
    kind: FileKind = FileKind.MIX
    name: str = ""

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "kind", FileKind(self.kind))
        if self.kind is FileKind.PLAN:
            raise InvalidValueError("a plan is not audio; play a mix, preview, take or backing")
        check_name(self.name, self.kind)

    def _encode_fields(self):
        return struct.pack("<HB", self.request_id, self.kind) + _text(self.name, "name")

    @classmethod
    def _decode_fields(cls, r):
        return cls(r.u16("request id"), r.enum(FileKind, "kind"), r.text("name"))


AUDIO_COMMANDS = (AudioCalibrateCommand, AudioRecordCommand, AudioStopCommand, AudioMonitorCommand, AudioPlayCommand)


@dataclass(frozen=True)
class AudioStatus(Message):
    """The box's audio: mode, level meters (dBFS), xruns, calibrated round trip, warnings.

    ``round_trip_ms`` is ``None`` when no calibration is stored for the current settings (carried
    as 0xFFFF hundredths). ``detail`` is a short warning or error text (at most 24 bytes).
    """

    TYPE: ClassVar = AudioMessageType.AUDIO_STATUS
    mode: AudioMode = AudioMode.IDLE
    flags: AudioFlags = AudioFlags.NONE
    input_level_db: int = NO_LEVEL_DB
    output_level_db: int = NO_LEVEL_DB
    xruns: int = 0
    round_trip_ms: float | None = None
    elapsed_ms: int = 0
    error: ErrorCode = ErrorCode.OK
    detail: str = ""

    def __post_init__(self):
        object.__setattr__(self, "mode", AudioMode(self.mode))
        object.__setattr__(self, "flags", AudioFlags(self.flags))
        object.__setattr__(self, "error", ErrorCode(self.error))
        for what, v in (("input level", self.input_level_db), ("output level", self.output_level_db)):
            _check_range(int(v), -128, 0, f"{what} (dBFS)")
        _check_range(self.xruns, 0, 0xFFFFFFFF, "xruns")
        _check_range(self.elapsed_ms, 0, 0xFFFFFFFF, "elapsed time (ms)")
        if self.round_trip_ms is not None and not 0 <= self.round_trip_ms < 655.35:
            raise InvalidValueError(f"round trip {self.round_trip_ms!r} ms is out of range; use 0..655.34")
        object.__setattr__(self, "detail", _truncate_text(self.detail, 24))

    @property
    def bluetooth_output(self) -> bool:
        return bool(self.flags & AudioFlags.BLUETOOTH_OUTPUT)

    def _encode_fields(self):
        rt = 0xFFFF if self.round_trip_ms is None else round(self.round_trip_ms * 100)
        return struct.pack(
            "<BBbbIHIB",
            self.mode,
            self.flags,
            int(self.input_level_db),
            int(self.output_level_db),
            self.xruns,
            rt,
            self.elapsed_ms,
            self.error,
        ) + _text(self.detail, "detail", 24)

    @classmethod
    def _decode_fields(cls, r):
        mode = r.enum(AudioMode, "audio mode")
        flags, lin, lout, xruns, rt, elapsed = r.unpack("BbbIHI", "audio status fields")
        error = r.enum(ErrorCode, "error")
        detail = r.text("detail", 24)
        if flags & ~0x0F:
            raise MalformedMessageError(f"AudioStatus: flags 0x{flags:02x} set bits this protocol does not define")
        if len(detail.encode()) > 24:
            raise MalformedMessageError(f"AudioStatus: detail is {len(detail.encode())} bytes; at most 24")
        if lin > 0 or lout > 0:
            raise MalformedMessageError(f"AudioStatus: levels {lin}/{lout} dBFS must be <= 0")
        return cls(mode, AudioFlags(flags & 0x0F), lin, lout, xruns, None if rt == 0xFFFF else rt / 100, elapsed, error, detail)


# ==============================================================================================
# Protocol 1.1: firmware updates over BLE. A client uploads a signed bundle (``tools/build-bundle``)
# as FileKind.FIRMWARE through the ordinary resumable, checksummed upload, then writes
# FirmwareInstallCommand; the box hands the bundle to the privileged updater and follows it in
# UpdateStatus on a characteristic of its own. Everything here is new in 1.1 and optional: a 1.0
# box refuses a FIRMWARE upload and answers the command with UNKNOWN_TYPE; a 1.0 client never sees
# a FIRMWARE entry (listing "all kinds" leaves bundles out). Kept in one block of its own, apart
# from the audio block; nothing above is renumbered.

#: First protocol version with firmware uploads, the install command and the update status.
UPDATE_MIN_VERSION = (1, 1)
#: read, notify (encrypted): :class:`UpdateStatus`, notified on every change of phase or progress.
UPDATE_STATUS_CHAR_UUID = uuid_for(0x0021)
#: Firmware bundles are ``.mlb`` files.
FIRMWARE_EXTENSIONS = (".mlb",)
#: Largest bundle a client may upload (a full linux-aarch64 bundle with every wheel is ~150 MB).
MAX_FIRMWARE_SIZE = 512 * 1024 * 1024
#: Kinds a 1.1 client may upload besides UPLOADABLE_KINDS.
FIRMWARE_UPLOADABLE_KINDS = (FileKind.FIRMWARE,)
#: Longest reason text (UTF-8 bytes) in an UpdateStatus; a notification carries as much as fits.
MAX_UPDATE_REASON = 200
#: Longest version text in an UpdateStatus.
MAX_VERSION_TEXT = 16


class UpdateMessageType(enum.IntEnum):
    """First byte of the 1.1 firmware-update messages (0x60-0x6F)."""

    CMD_FIRMWARE_INSTALL = 0x60
    UPDATE_STATUS = 0x6F


class UpdatePhase(enum.IntEnum):
    """Where a firmware update stands (the box reads it back from the updater's files)."""

    IDLE = 0  # no update was asked for (or its outcome is gone)
    REQUESTED = 1  # the box asked the updater to install the bundle; the updater has not started
    VERIFYING = 2  # the updater checks the signature and every digest; nothing changed yet
    INSTALLING = 3  # unpacking into the inactive slot, building it, running its self-test
    SWITCHED = 4  # ``current`` points at the new slot; its health check runs (the service restarts)
    INSTALLED = 5  # the new version passed its health check
    ROLLED_BACK = 6  # the new version failed its health check; the previous slot runs again (reason)
    REFUSED = 7  # the bundle was refused before anything changed (reason)
    FAILED = 8  # the new slot's self-test failed (never switched to) or the update was interrupted (reason)

    @property
    def finished(self) -> bool:
        """True once there is an outcome (or nothing runs)."""
        return self in (UpdatePhase.IDLE, UpdatePhase.INSTALLED, UpdatePhase.ROLLED_BACK, UpdatePhase.REFUSED, UpdatePhase.FAILED)


@dataclass(frozen=True)
class FirmwareInstallCommand(_Request):
    """Install the uploaded bundle ``name`` (a FileKind.FIRMWARE file); follow it in :class:`UpdateStatus`.

    Examples
    --------
    >>> cmd = FirmwareInstallCommand(7, "melisma-0.3.0.mlb", allow_downgrade=True)
    >>> decode(cmd.encode()) == cmd
    True
    """

    TYPE: ClassVar = UpdateMessageType.CMD_FIRMWARE_INSTALL
    name: str = ""
    allow_downgrade: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_name(self.name, FileKind.FIRMWARE)

    def _encode_fields(self):
        return struct.pack("<H", self.request_id) + _text(self.name, "name") + bytes([int(bool(self.allow_downgrade))])

    @classmethod
    def _decode_fields(cls, r):
        rid, name, flags = r.u16("request id"), r.text("name"), r.u8("flags")
        if flags & ~0x01:
            raise MalformedMessageError(
                f"FirmwareInstallCommand: flags 0x{flags:02x} set bits this protocol does not define (bit 0: allow downgrade)"
            )
        return cls(rid, name, bool(flags & 1))


UPDATE_COMMANDS = (FirmwareInstallCommand,)


@dataclass(frozen=True)
class UpdateStatus(Message):
    """A firmware update's phase, progress (0..1) and outcome, with the reason when it did not install.

    ``running_version`` is the firmware that answers (after a switch the restarted service
    runs the new one); ``version`` the version being installed or last installed; ``bundle`` the
    uploaded file's name; ``reason`` why it was refused, rolled back or failed (at most
    :data:`MAX_UPDATE_REASON` bytes; a notification carries what fits the link, see :meth:`fit`).

    Examples
    --------
    >>> st = UpdateStatus(UpdatePhase.REFUSED, 0.0, "1.0.0", "", "m.mlb", "signature by an unknown key " * 6)
    >>> len(st.encode()) > MAX_NOTIFICATION_SIZE, len(st.fit(MAX_NOTIFICATION_SIZE).encode()) <= MAX_NOTIFICATION_SIZE
    (True, True)
    >>> decode(st.encode()) == st
    True
    """

    TYPE: ClassVar = UpdateMessageType.UPDATE_STATUS
    phase: UpdatePhase = UpdatePhase.IDLE
    progress: float = 0.0  # carried in 1/10000
    running_version: str = ""
    version: str = ""
    bundle: str = ""
    reason: str = ""

    def __post_init__(self):
        object.__setattr__(self, "phase", UpdatePhase(self.phase))
        if not 0.0 <= self.progress <= 1.0:
            raise InvalidValueError(f"progress {self.progress!r} is out of range; use 0..1")
        object.__setattr__(self, "progress", round(self.progress * 10000) / 10000)
        for what in ("running_version", "version"):
            object.__setattr__(self, what, _truncate_text(getattr(self, what), MAX_VERSION_TEXT))
        object.__setattr__(self, "bundle", _truncate_text(self.bundle, MAX_NAME_LENGTH))
        object.__setattr__(self, "reason", _truncate_text(self.reason, MAX_UPDATE_REASON))

    def fit(self, max_size: int) -> UpdateStatus:
        """The same status with ``reason`` (then ``bundle``) cut so it encodes to at most ``max_size`` bytes."""
        over = len(self.encode()) - max_size
        if over <= 0:
            return self
        reason = _truncate_text(self.reason, max(0, len(self.reason.encode()) - over))
        status = UpdateStatus(self.phase, self.progress, self.running_version, self.version, self.bundle, reason)
        over = len(status.encode()) - max_size
        if over > 0:
            bundle = _truncate_text(self.bundle, max(0, len(self.bundle.encode()) - over))
            status = UpdateStatus(self.phase, self.progress, self.running_version, self.version, bundle, reason)
        return status

    def _encode_fields(self):
        return (
            struct.pack("<BH", self.phase, round(self.progress * 10000))
            + _text(self.running_version, "version")
            + _text(self.version, "version")
            + _text(self.bundle, "bundle")
            + _text(self.reason, "reason")
        )

    @classmethod
    def _decode_fields(cls, r):
        phase = r.enum(UpdatePhase, "update phase")
        progress = r.u16("progress")
        if progress > 10000:
            raise MalformedMessageError(f"UpdateStatus: progress {progress}/10000 is over 10000")
        texts = []
        for what, limit in (
            ("running version", MAX_VERSION_TEXT),
            ("version", MAX_VERSION_TEXT),
            ("bundle", MAX_NAME_LENGTH),
            ("reason", MAX_UPDATE_REASON),
        ):
            text = r.text(what)
            if len(text.encode()) > limit:
                raise MalformedMessageError(f"UpdateStatus: {what} is {len(text.encode())} bytes; at most {limit}")
            texts.append(text)
        return cls(phase, progress / 10000, *texts)


# ==============================================================================================
# Protocol 1.1: re-run an interrupted job. A job the box was running when it crashed or lost power
# is reported failed with error INTERRUPTED under its id; RerunCommand queues it again, with the
# inputs, output and controls it had, under a new job id (the CommandReply carries it). Like the
# audio and update blocks it is an optional 1.1 addition (1.1 is the minor version still being
# built: its additions each have a block of their own): a 1.0 box, or a 1.1 box built before it,
# answers it with UNKNOWN_TYPE, which the client reports as such. Its type is in the jobs range
# (0x20-0x2F) after Delete; nothing above is renumbered.
#
# Job ids stay 16-bit on the wire (Status, CommandReply, Cancel, Rerun), so 1.0 and 1.1 centrals
# keep working. The box counts them up across restarts (journaled) and wraps from 65535 to 1,
# skipping every id it still remembers (queued, running, and the last finished jobs): an id is
# unique among the jobs the box remembers, and it comes back only after 65,535 newer jobs.

#: First protocol version with the re-run command.
RERUN_MIN_VERSION = (1, 1)
#: Largest job id; after it the box's ids go on at 1 (skipping ids it still remembers).
MAX_JOB_ID = 0xFFFF


class JobMessageType(enum.IntEnum):
    """First byte of the 1.1 job messages (the jobs range 0x20-0x2F, after Delete)."""

    CMD_RERUN = 0x26


@dataclass(frozen=True)
class RerunCommand(_Request):
    """Queue again a job that failed INTERRUPTED (cut off by a crash or power cut); replies with the new job id.

    The box refuses with NOT_FOUND an id it does not remember and with BAD_STATE a job that was not
    interrupted (done, cancelled, failed otherwise, still queued or running) or was already re-run.

    Examples
    --------
    >>> cmd = RerunCommand(7, 1234)
    >>> cmd.encode().hex()  # type, request id, job id (little-endian)
    '260700d204'
    >>> decode(cmd.encode()) == cmd
    True
    """

    TYPE: ClassVar = JobMessageType.CMD_RERUN
    job_id: int = 0

    def __post_init__(self):
        super().__post_init__()
        _check_range(self.job_id, 1, MAX_JOB_ID, "job id")

    def _encode_fields(self):
        return struct.pack("<HH", self.request_id, self.job_id)

    @classmethod
    def _decode_fields(cls, r):
        return cls(*r.unpack("HH", "request id and job id"))


RERUN_COMMANDS = (RerunCommand,)
