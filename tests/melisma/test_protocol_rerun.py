"""Protocol 1.1 addition: the re-run command (a job interrupted by a crash, queued again under a new id)."""

from __future__ import annotations

import struct

import pytest
from melisma import protocol as p


def test_rerun_round_trips_and_its_bytes_are_as_documented():
    cmd = p.RerunCommand(0x0102, 0xFFFF)
    data = cmd.encode()
    assert data == bytes([0x26]) + struct.pack("<HH", 0x0102, 0xFFFF)  # protocol.md §11
    assert p.decode(data) == cmd
    assert p.decode(data, allowed=p.COMMANDS + p.RERUN_COMMANDS) == cmd


@pytest.mark.parametrize("job_id", [0, 0x10000, -1])
def test_rerun_job_ids_outside_1_to_65535_are_refused(job_id):
    with pytest.raises(p.InvalidValueError, match="job id"):
        p.RerunCommand(1, job_id)


def test_a_rerun_of_job_0_on_the_wire_is_malformed_and_a_short_one_truncated():
    with pytest.raises(p.MalformedMessageError, match="job id 0"):
        p.decode(bytes([0x26]) + struct.pack("<HH", 1, 0))
    with pytest.raises(p.TruncatedMessageError):
        p.decode(bytes([0x26, 1, 0, 5]))
    with pytest.raises(p.OversizedMessageError):
        p.decode(bytes([0x26]) + struct.pack("<HH", 1, 5) + b"\0")


def test_the_rerun_block_is_additive_and_a_1_0_peer_is_still_compatible():
    assert p.RERUN_MIN_VERSION <= p.PROTOCOL_VERSION and p.PROTOCOL_VERSION[0] == 1
    p.check_compatible((1, 0))
    # the new type sits in the jobs range after Delete and collides with nothing else
    assert int(p.JobMessageType.CMD_RERUN) == p.MessageType.CMD_DELETE + 1
    older_types = {int(t) for enum in (p.MessageType, p.AudioMessageType, p.UpdateMessageType) for t in enum}
    assert int(p.JobMessageType.CMD_RERUN) not in older_types
    # what a box without it does: refuse the unknown type (its command set lacks RERUN_COMMANDS)
    with pytest.raises(p.UnknownMessageTypeError) as exc:
        p.decode(p.RerunCommand(1, 5).encode(), allowed=p.COMMANDS + p.AUDIO_COMMANDS + p.UPDATE_COMMANDS)
    assert exc.value.code is p.ErrorCode.UNKNOWN_TYPE
