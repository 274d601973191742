"""The BLE protocol module: round trips, limits, typed errors and a fuzzed decoder."""

from __future__ import annotations

import ast
import hashlib
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from melisma import errors
from melisma import protocol as p

SHA = hashlib.sha256(b"x").digest()

EXAMPLES = [
    p.Info(firmware="0.1.0", passkey_display=True),
    p.Controls(p.Style.CPOP, {"warmth": 0.5, "reverb": -1.0, "air": 0.01}),
    p.Controls("ballad", {}),
    p.Status(p.DeviceState.BUSY, 7, p.JobKind.MIX, p.JobState.RUNNING, 0.4321, 2, p.ErrorCode.OK, "pitch"),
    p.MixCommand(1, "take.m4a", "backing.mp3", "mix.wav"),
    p.AnalyzeCommand(2, "take.m4a", "backing.mp3", "plan.json"),
    p.RenderCommand(3, "plan.json", "mix-2.flac"),
    p.PreviewCommand(4, "plan.json", "prev.wav", 30_000, 8_000),
    p.CancelCommand(5, 7),
    p.DeleteCommand(6, p.FileKind.MIX, "mix.wav"),
    p.CommandReply(6, p.ErrorCode.NOT_FOUND, 0, "no mix named mix.wav"),
    p.ListRequest(0, 3),
    p.ListRequest(p.FileKind.TAKE, 0),
    p.LibraryPage.fit([p.LibraryEntry(p.FileKind.TAKE, f"t{i}.m4a", i * 1000, SHA) for i in range(30)], 2),
    p.UploadBegin(9, p.FileKind.BACKING, "b.m4a", 123456, SHA),
    p.DownloadBegin(10, p.FileKind.MIX, "mix.wav", 4096),
    p.TransferQuery(3),
    p.UploadCommit(3),
    p.TransferAbort(3),
    p.DownloadAck(3, 999),
    p.TransferAck(3, 1000),
    p.TransferNack(3, 1000, p.ErrorCode.BAD_CHECKSUM),
    p.TransferReady(9, p.ErrorCode.OK, 3, 100, 123456, SHA, 234, 16),
    p.TransferDone(3, p.ErrorCode.BAD_CHECKSUM, "sha256 differs"),
    p.Data(3, 4096, os.urandom(200)),
]


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_and_fits(msg):
    data = msg.encode()
    assert data[0] == msg.TYPE
    assert len(data) <= p.MAX_MESSAGE_SIZE
    assert p.decode(data) == msg
    # Everything the box notifies must fit a notification at the minimum MTU (except pages/data).
    if isinstance(msg, (p.Status, p.CommandReply, *p.TRANSFER_EVENTS, p.Controls)):
        assert len(data) <= p.MAX_NOTIFICATION_SIZE


def test_every_message_type_has_a_class():
    encoded_types = {m.TYPE for m in EXAMPLES}
    assert encoded_types == set(p.MessageType)


@pytest.mark.parametrize("msg", EXAMPLES, ids=lambda m: type(m).__name__)
def test_truncated_messages_raise_typed_errors(msg):
    data = msg.encode()
    for cut in range(0, len(data)):
        if isinstance(msg, (p.Data, p.LibraryPage)) and cut >= len(data) - 1:
            continue  # a shorter Data payload / page is still a valid message
        try:
            decoded = p.decode(data[:cut])
        except p.MessageError as exc:
            assert isinstance(exc, errors.ProtocolError)
            assert exc.code in (p.ErrorCode.TRUNCATED, p.ErrorCode.MALFORMED, p.ErrorCode.BAD_NAME)
        else:
            # only variable-length tails (Data payload) may decode when cut
            assert isinstance(msg, (p.Data, p.LibraryPage)), (cut, decoded)


def test_trailing_bytes_and_oversized_messages_are_rejected():
    with pytest.raises(p.OversizedMessageError, match="unexpected bytes"):
        p.decode(p.CancelCommand(1, 2).encode() + b"\0")
    with pytest.raises(p.OversizedMessageError, match="at most 512"):
        p.decode(bytes([p.MessageType.DATA, 1]) + bytes(600))
    with pytest.raises(p.OversizedMessageError):
        p.Data(1, 0, bytes(p.MAX_CHUNK_PAYLOAD + 1))


def test_unknown_type_and_wrong_characteristic():
    with pytest.raises(p.UnknownMessageTypeError, match="0xee"):
        p.decode(b"\xee\x00")
    with pytest.raises(p.UnknownMessageTypeError, match="not accepted here"):
        p.decode(p.Status().encode(), allowed=p.COMMANDS)
    with pytest.raises(p.TruncatedMessageError, match="empty"):
        p.decode(b"")


@pytest.mark.parametrize(
    "name", ["../etc/passwd", "a/b.m4a", ".hidden.m4a", "x" * 60 + ".m4a", "take", "take.exe", "t\u00e9.m4a", ""]
)
def test_bad_names_are_refused_on_both_ends(name):
    with pytest.raises(p.BadNameError):
        p.UploadBegin(1, p.FileKind.TAKE, name, 10, SHA)
    # a hand-built message with the same name is refused by the decoder too
    raw = name.encode()[:255]
    data = bytes([p.MessageType.UPLOAD_BEGIN]) + b"\x01\x00\x01" + bytes([len(raw)]) + raw + b"\x0a\0\0\0" + SHA
    with pytest.raises(p.MessageError):
        p.decode(data)


def test_slider_and_style_values_are_checked():
    with pytest.raises(p.InvalidValueError, match=r"warmth=1.5"):
        p.Controls(p.Style.NEUTRAL, {"warmth": 1.5})
    with pytest.raises(p.InvalidValueError, match="unknown slider"):
        p.Controls(p.Style.NEUTRAL, {"loudness": 0.1})
    with pytest.raises(p.InvalidValueError, match="cpop, western, ballad"):
        p.Controls("jazz")
    bad = bytes([p.MessageType.CONTROLS, 1, 101, 0, 0, 0, 0, 0])
    with pytest.raises(p.MalformedMessageError, match="warmth is 101"):
        p.decode(bad)
    bad_style = bytes([p.MessageType.CONTROLS, 9, 0, 0, 0, 0, 0, 0])
    with pytest.raises(p.MalformedMessageError, match="style 9 is unknown"):
        p.decode(bad_style)
    c = p.Controls(p.Style.WESTERN, {"reverb": -0.3})
    assert c.engine_sliders() == {"reverb": -0.3}
    assert c.style.engine_name == "western"


def test_version_check():
    assert p.parse_software_revision(p.software_revision()) == p.PROTOCOL_VERSION
    p.check_compatible((p.PROTOCOL_VERSION[0], 99))
    with pytest.raises(p.IncompatibleVersionError, match="update the"):
        p.check_compatible((p.PROTOCOL_VERSION[0] + 1, 0))
    with pytest.raises(p.IncompatibleVersionError, match="is this a Melisma box"):
        p.parse_software_revision(b"Acme 2.0")


def test_chunk_size_follows_mtu():
    assert p.chunk_payload_size(23 + 41) == 64 - 3 - p.DATA_HEADER_SIZE
    assert p.chunk_payload_size(517) == p.MAX_CHUNK_PAYLOAD
    with pytest.raises(p.InvalidValueError, match="below the protocol minimum"):
        p.chunk_payload_size(23)


def test_data_crc_detects_corruption():
    d = p.Data(1, 0, b"hello world")
    raw = bytearray(d.encode())
    raw[-1] ^= 0x01
    assert not p.decode(bytes(raw)).crc_ok
    assert p.decode(d.encode()).crc_ok


def test_advertised_name():
    assert p.advertised_name("F0:12:34:56:AB:CD") == "Melisma-ABCD"
    assert p.advertised_name("F0:12:34:56:AB:CD/P") == "Melisma-ABCD"


def test_imports_only_the_standard_library():
    """The phone build ships protocol.py with errors.py alone: nothing else may be imported."""
    src = Path(p.__file__).read_text()
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] in allowed for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.module == "errors"
            else:
                assert node.module.split(".")[0] in allowed


# ----------------------------------------------------------------------------------------------
# Fuzzing: any bytes give a message or a typed ProtocolError, never anything else.


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=0, max_size=600))
def test_fuzz_random_bytes(data):
    try:
        msg = p.decode(data)
    except p.MessageError as exc:
        assert isinstance(exc.code, p.ErrorCode) and str(exc)
    else:
        assert p.decode(msg.encode()) == msg


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_fuzz_mutated_valid_messages(msg, data):
    raw = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        decoded = p.decode(bytes(raw))
    except p.MessageError as exc:
        assert isinstance(exc.code, p.ErrorCode)
    else:
        assert p.decode(decoded.encode()) == decoded
