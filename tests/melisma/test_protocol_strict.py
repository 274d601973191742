"""The decoder accepts exactly what the encoder produces (issue 16).

Two properties, on generated messages of every type:

* decode ∘ encode is the identity (every message the encoder can produce comes back equal);
* every byte string the decoder accepts re-encodes to the same bytes (nothing is dropped,
  truncated or normalised on the way in), over random and mutated inputs.

Plus the three holes the issue found: Info flag bits beyond bit 0, texts over their limit, and
LibraryPage entry names that are not safe file names.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from melisma import protocol as p

SHA = hashlib.sha256(b"x").digest()

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
tid = st.integers(1, 0xFF)
sha = st.binary(min_size=32, max_size=32)


def text(max_bytes: int) -> st.SearchStrategy[str]:
    """UTF-8 text of at most ``max_bytes`` bytes."""
    return st.text(max_size=max_bytes).filter(lambda s: len(s.encode()) <= max_bytes)


def name(kind: p.FileKind) -> st.SearchStrategy[str]:
    stem = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,30}", fullmatch=True)
    return st.builds(lambda s, e: s + e, stem, st.sampled_from(kind.extensions))


kinds = st.sampled_from(list(p.FileKind))


@st.composite
def kind_and_name(draw, allowed=tuple(p.FileKind)):
    kind = draw(st.sampled_from(list(allowed)))
    return kind, draw(name(kind))


@st.composite
def library_page(draw):
    entries = []
    for _ in range(draw(st.integers(0, 20))):
        kind, n = draw(kind_and_name())
        entries.append(p.LibraryEntry(kind, n, draw(u32), draw(sha)))
    return p.LibraryPage.fit(entries, draw(st.integers(0, len(entries))))


sliders = st.fixed_dictionaries({n: st.integers(-100, 100).map(lambda v: v / 100) for n in p.SLIDER_NAMES})

MESSAGES = st.one_of(
    st.builds(p.Info, st.tuples(u8, u8), text(32), u32, u8, st.booleans()),
    st.builds(p.Controls, st.sampled_from(list(p.Style)), sliders),
    st.builds(p.Status, st.sampled_from(list(p.DeviceState)), u16, st.sampled_from(list(p.JobKind)),
              st.sampled_from(list(p.JobState)), st.integers(0, 10000).map(lambda v: v / 10000), u8,
              st.sampled_from(list(p.ErrorCode)), text(24)),
    st.builds(p.MixCommand, u16, name(p.FileKind.TAKE), name(p.FileKind.BACKING), name(p.FileKind.MIX)),
    st.builds(p.AnalyzeCommand, u16, name(p.FileKind.TAKE), name(p.FileKind.BACKING), name(p.FileKind.PLAN)),
    st.builds(p.RenderCommand, u16, name(p.FileKind.PLAN), name(p.FileKind.MIX)),
    st.builds(p.PreviewCommand, u16, name(p.FileKind.PLAN), name(p.FileKind.PREVIEW), u32,
              st.integers(1, p.MAX_PREVIEW_MS)),
    st.builds(p.CancelCommand, u16, st.integers(1, 0xFFFF)),
    kind_and_name().flatmap(lambda kn: st.builds(p.DeleteCommand, u16, st.just(kn[0]), st.just(kn[1]))),
    st.builds(p.CommandReply, u16, st.sampled_from(list(p.ErrorCode)), u16, text(p.CommandReply.MAX_DETAIL)),
    st.builds(p.ListRequest, st.sampled_from([0, *p.FileKind]), u16),
    library_page(),
    kind_and_name(p.UPLOADABLE_KINDS).flatmap(
        lambda kn: st.builds(p.UploadBegin, u16, st.just(kn[0]), st.just(kn[1]), u32, sha)),
    kind_and_name().flatmap(lambda kn: st.builds(p.DownloadBegin, u16, st.just(kn[0]), st.just(kn[1]), u32)),
    st.builds(p.TransferQuery, tid), st.builds(p.UploadCommit, tid), st.builds(p.TransferAbort, tid),
    st.builds(p.DownloadAck, tid, u32), st.builds(p.TransferAck, tid, u32),
    st.builds(p.TransferNack, tid, u32, st.sampled_from(list(p.ErrorCode))),
    st.builds(p.TransferReady, u16, st.sampled_from(list(p.ErrorCode)), u8, u32, u32, sha,
              st.integers(0, p.MAX_CHUNK_PAYLOAD), u16),
    st.builds(p.TransferDone, u8, st.sampled_from(list(p.ErrorCode)), text(p.MAX_NOTIFICATION_SIZE - 4)),
    st.builds(p.Data, tid, u32, st.binary(max_size=p.MAX_CHUNK_PAYLOAD), u32),
    st.builds(p.AudioCalibrateCommand, u16, st.integers(1, 600).map(lambda v: v / 10)),
    st.builds(p.AudioRecordCommand, u16, name(p.FileKind.BACKING), name(p.FileKind.TAKE), st.integers(0, p.MAX_RECORD_S)),
    st.builds(p.AudioStopCommand, u16),
    st.builds(p.AudioMonitorCommand, u16, st.booleans(), st.integers(0, 100).map(lambda v: v / 100),
              st.one_of(st.just(""), name(p.FileKind.BACKING))),
    kind_and_name([k for k in p.FileKind if k is not p.FileKind.PLAN]).flatmap(
        lambda kn: st.builds(p.AudioPlayCommand, u16, st.just(kn[0]), st.just(kn[1]))),
    st.builds(p.FirmwareInstallCommand, u16, name(p.FileKind.FIRMWARE), st.booleans()),
    st.builds(p.RerunCommand, u16, st.integers(1, p.MAX_JOB_ID)),  # protocol 1.2
    st.builds(p.UpdateStatus, st.sampled_from(list(p.UpdatePhase)), st.integers(0, 10000).map(lambda v: v / 10000),
              text(p.MAX_VERSION_TEXT), text(p.MAX_VERSION_TEXT), text(p.MAX_NAME_LENGTH), text(p.MAX_UPDATE_REASON)),
    st.builds(p.AudioStatus, st.sampled_from(list(p.AudioMode)), st.integers(0, 15), st.integers(-128, 0),
              st.integers(-128, 0), u32, st.one_of(st.none(), st.integers(0, 65534).map(lambda v: v / 100)), u32,
              st.sampled_from(list(p.ErrorCode)), text(24)),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES)
def test_decode_of_encode_is_the_identity(msg):
    data = msg.encode()
    back = p.decode(data)
    assert back == msg
    assert back.encode() == data


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MESSAGES, st.data())
def test_every_accepted_message_re_encodes_to_the_same_bytes(msg, data):
    raw = bytearray(msg.encode())
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "bits"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] = data.draw(u8)
        elif op == "bits" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "cut":
            del raw[pos:]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        decoded = p.decode(bytes(raw))
    except p.MessageError as exc:
        assert isinstance(exc.code, p.ErrorCode) and str(exc)
    else:
        assert decoded.encode() == bytes(raw)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(p._REGISTRY)), st.binary(max_size=120))
def test_random_bodies_of_every_type_are_accepted_only_if_they_re_encode(type_byte, body):
    raw = bytes([type_byte]) + body
    try:
        decoded = p.decode(raw)
    except p.MessageError:
        return
    assert decoded.encode() == raw


def test_info_flag_bits_other_than_passkey_display_are_refused():
    raw = bytearray(p.Info(firmware="1.0", passkey_display=True).encode())
    assert p.decode(bytes(raw)).passkey_display
    raw[8] = 0x03  # bit 1 is not defined: it used to be dropped silently
    with pytest.raises(p.MalformedMessageError, match="flags 0x03"):
        p.decode(bytes(raw))


@pytest.mark.parametrize("build, limit", [
    (lambda t: bytes([p.MessageType.COMMAND_REPLY]) + struct.pack("<HBH", 1, 0, 0) + t, p.CommandReply.MAX_DETAIL),
    (lambda t: bytes([p.MessageType.TRANSFER_DONE, 1, 0]) + t, p.MAX_NOTIFICATION_SIZE - 4),
    (lambda t: bytes([p.MessageType.INFO]) + struct.pack("<BBIBB", 1, 1, 10, 48, 0) + t, 32),
    (lambda t: bytes([p.MessageType.STATUS]) + struct.pack("<BHBBHBB", 0, 0, 0, 0, 0, 0, 0) + t, 24),
], ids=["CommandReply.detail", "TransferDone.detail", "Info.firmware", "Status.stage"])
def test_texts_over_their_limit_are_refused_on_decode(build, limit):
    fits = b"x" * limit
    assert p.decode(build(bytes([len(fits)]) + fits)).encode() == build(bytes([len(fits)]) + fits)
    over = b"x" * (limit + 1)
    with pytest.raises(p.MalformedMessageError, match=f"at most {limit}"):
        p.decode(build(bytes([len(over)]) + over))


@pytest.mark.parametrize("bad", ["../../etc/passwd", ".hidden.wav", "a/b.wav", "take.exe", "x" * 49 + ".wav"])
def test_library_page_names_are_validated_on_decode(bad):
    raw = bad.encode()
    data = (bytes([p.MessageType.LIBRARY_PAGE]) + struct.pack("<HHB", 1, 0xFFFF, 1)
            + bytes([p.FileKind.TAKE, len(raw)]) + raw + struct.pack("<I", 5) + SHA)
    with pytest.raises(p.MessageError):
        p.decode(data)
    # and a box cannot build such an entry in the first place
    with pytest.raises(p.BadNameError):
        p.LibraryEntry(p.FileKind.TAKE, bad, 5, SHA)
