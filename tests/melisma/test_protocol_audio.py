"""Protocol 1.1 audio messages: encoding round trips, limits, and compatibility with 1.0."""

from __future__ import annotations

import struct

import pytest
from melisma import protocol as p


@pytest.mark.parametrize("msg", [
    p.AudioCalibrateCommand(3, 7.5),
    p.AudioRecordCommand(4, "b.wav", "t.wav", 30),
    p.AudioStopCommand(5),
    p.AudioMonitorCommand(6, True, 0.55, "b.wav"),
    p.AudioMonitorCommand(7, False),
    p.AudioPlayCommand(8, p.FileKind.MIX, "m.m4a"),
    p.AudioStatus(p.AudioMode.RECORDING, p.AudioFlags.BLUETOOTH_OUTPUT | p.AudioFlags.CALIBRATED, -12, -6, 3, 8.0,
                  1234, p.ErrorCode.OK, "bluetooth output"),
    p.AudioStatus(),
])
def test_round_trip_and_fits_a_minimum_mtu_notification(msg):
    data = msg.encode()
    assert p.decode(data) == msg
    assert len(data) <= p.MAX_NOTIFICATION_SIZE


def test_status_fields_on_the_wire():
    data = p.AudioStatus(p.AudioMode.MONITORING, p.AudioFlags.CLIPPING, -3, -1, 70000, 10.67, 5,
                         p.ErrorCode.OK).encode()
    assert data[0] == 0x7F
    mode, flags, lin, lout, xruns, rt, elapsed, err = struct.unpack_from("<BBbbIHIB", data, 1)
    assert (mode, flags, lin, lout, xruns, rt, elapsed, err) == (3, 8, -3, -1, 70000, 1067, 5, 0)
    assert p.decode(p.AudioStatus().encode()).round_trip_ms is None  # 0xFFFF: not calibrated


def test_limits_are_checked():
    with pytest.raises(p.InvalidValueError, match=r"0\.1\.\.60"):
        p.AudioCalibrateCommand(1, 61)
    with pytest.raises(p.InvalidValueError, match="correction"):
        p.AudioMonitorCommand(1, True, 1.5)
    with pytest.raises(p.InvalidValueError, match="plan is not audio"):
        p.AudioPlayCommand(1, p.FileKind.PLAN, "x.json")
    with pytest.raises(p.BadNameError):
        p.AudioRecordCommand(1, "../b.wav", "t.wav")
    with pytest.raises(p.MalformedMessageError, match="correction=101"):
        p.decode(bytes([0x73]) + struct.pack("<HBB", 1, 1, 101) + b"\x00")
    with pytest.raises(p.TruncatedMessageError):
        p.decode(p.AudioStatus().encode()[:-3])


def test_compatible_with_1_0():
    assert p.PROTOCOL_VERSION == (1, 1) and p.AUDIO_MIN_VERSION == (1, 1)
    p.check_compatible((1, 0))  # a 1.0 box or app still talks to 1.1
    # the 1.0 message types are untouched and the audio block does not overlap them
    assert not {int(t) for t in p.AudioMessageType} & {int(t) for t in p.MessageType}
    # a 1.0 command characteristic (COMMANDS only) refuses the audio commands with UNKNOWN_TYPE
    with pytest.raises(p.UnknownMessageTypeError) as err:
        p.decode(p.AudioStopCommand(1).encode(), allowed=p.COMMANDS)
    assert err.value.code is p.ErrorCode.UNKNOWN_TYPE
    assert p.AUDIO_STATUS_CHAR_UUID not in {p.INFO_CHAR_UUID, p.CONTROLS_CHAR_UUID, p.STATUS_CHAR_UUID,
                                            p.COMMAND_CHAR_UUID, p.LIBRARY_CHAR_UUID, p.TRANSFER_CONTROL_CHAR_UUID,
                                            p.TRANSFER_DATA_CHAR_UUID}
