"""Protocol 1.1 firmware-update messages: encoding, limits, refusals, and what 1.0 peers still see."""

from __future__ import annotations

import hashlib
import random

import pytest
from melisma import protocol as p
from melisma.device.storage import Storage, StorageError


def test_install_command_round_trips_and_refuses_bad_values():
    for cmd in (p.FirmwareInstallCommand(1, "melisma-0.3.0.mlb"), p.FirmwareInstallCommand(0xFFFF, "a.mlb", True)):
        assert p.decode(cmd.encode(), allowed=p.UPDATE_COMMANDS) == cmd
    with pytest.raises(p.BadNameError, match="not allowed for a firmware"):
        p.FirmwareInstallCommand(1, "take.wav")
    with pytest.raises(p.BadNameError):
        p.FirmwareInstallCommand(1, "../etc.mlb")
    data = bytearray(p.FirmwareInstallCommand(1, "a.mlb").encode())
    data[-1] = 0x03
    with pytest.raises(p.MalformedMessageError, match="flags 0x03"):
        p.decode(bytes(data))
    with pytest.raises(p.TruncatedMessageError):
        p.decode(bytes(data[:-1]))
    # not accepted where 1.0 commands are expected (a 1.0 box answers: unknown type)
    with pytest.raises(p.UnknownMessageTypeError):
        p.decode(p.FirmwareInstallCommand(1, "a.mlb").encode(), allowed=p.COMMANDS)


def test_update_status_round_trips_and_checks_its_fields():
    rng = random.Random(3)
    for phase in p.UpdatePhase:
        st = p.UpdateStatus(phase, rng.random(), "0.2.0", "0.3.0", "melisma-0.3.0.mlb", "é" * rng.randint(0, 120))
        assert p.decode(st.encode(), allowed=(p.UpdateStatus,)) == st
    assert [ph.name for ph in p.UpdatePhase if ph.finished] == ["IDLE", "INSTALLED", "ROLLED_BACK", "REFUSED", "FAILED"]
    with pytest.raises(p.InvalidValueError):
        p.UpdateStatus(p.UpdatePhase.INSTALLING, 1.5)
    long = p.UpdateStatus(p.UpdatePhase.REFUSED, 0, "1" * 40, "", "b.mlb", "x" * 500)
    assert len(long.running_version) == p.MAX_VERSION_TEXT and len(long.reason) == p.MAX_UPDATE_REASON
    bad = bytearray(p.UpdateStatus(p.UpdatePhase.IDLE).encode())
    bad[1] = 9
    with pytest.raises(p.MalformedMessageError, match="update phase 9"):
        p.decode(bytes(bad))
    bad = bytearray(p.UpdateStatus(p.UpdatePhase.IDLE).encode())
    bad[2:4] = (10001).to_bytes(2, "little")
    with pytest.raises(p.MalformedMessageError, match="10001/10000"):
        p.decode(bytes(bad))
    over = bytes([p.UpdateMessageType.UPDATE_STATUS, 0, 0, 0, 0, 0, 0]) + bytes([201]) + b"r" * 201
    with pytest.raises(p.MalformedMessageError, match="reason is 201 bytes"):
        p.decode(over)


@pytest.mark.parametrize("mtu", [p.MIN_ATT_MTU, 100, 185, 247, p.PREFERRED_ATT_MTU])
def test_a_notification_fits_every_link_and_keeps_what_fits(mtu):
    st = p.UpdateStatus(p.UpdatePhase.ROLLED_BACK, 0.0, "0.2.0", "0.3.0", "m" * 44 + ".mlb",
                        "health check failed: the health check did not pass within 90 s; " * 3)
    fitted = st.fit(mtu - 3)
    assert len(fitted.encode()) <= mtu - 3
    assert (fitted.phase, fitted.version, fitted.running_version) == (st.phase, st.version, st.running_version)
    assert st.reason.startswith(fitted.reason) and st.bundle.startswith(fitted.bundle)
    if len(st.encode()) <= mtu - 3:
        assert fitted == st
    else:
        assert fitted != st and len(fitted.encode()) >= mtu - 3 - 1  # cut no more than needed (UTF-8 aside)


def test_firmware_kind_names_limits_and_listing(tmp_path):
    assert p.FileKind.FIRMWARE.extensions == (".mlb",) and p.FileKind.TAKE.extensions == p.AUDIO_EXTENSIONS
    p.check_name("melisma-0.3.0-linux-aarch64.mlb", p.FileKind.FIRMWARE)
    assert p.decode(p.ListRequest(p.FileKind.FIRMWARE).encode()).kind is p.FileKind.FIRMWARE
    store = Storage(tmp_path)
    data = b"#!/bin/sh\n" + bytes(range(256)) * 40
    up = store.begin_upload(p.FileKind.FIRMWARE, "m.mlb", len(data), hashlib.sha256(data).digest())
    up.write(0, data)
    up.commit()
    take = b"RIFF"
    up = store.begin_upload(p.FileKind.TAKE, "t.wav", len(take), hashlib.sha256(take).digest())
    up.write(0, take)
    up.commit()
    # bundles sit in their own folder, never in a listing of all kinds (what a 1.0 client reads)
    assert (tmp_path / "firmware" / "m.mlb").read_bytes() == data
    assert [e.name for e in store.list()] == ["t.wav"]
    assert [(e.kind, e.name) for e in store.list(p.FileKind.FIRMWARE)] == [(p.FileKind.FIRMWARE, "m.mlb")]
    page = p.LibraryPage.fit(store.list(), 0)
    assert all(e.kind in p.UPLOADABLE_KINDS for e in p.decode(page.encode()).entries)
    # a bundle may be bigger than an audio file, up to its own limit
    small = Storage(tmp_path / "small", max_file_size=1000)
    with pytest.raises(StorageError, match="up to 1000 bytes"):
        small.begin_upload(p.FileKind.TAKE, "t.wav", 2000, bytes(32))
    small.begin_upload(p.FileKind.FIRMWARE, "m.mlb", 2000, bytes(32)).discard()
    with pytest.raises(StorageError, match="firmware bundles up to") as big:
        small.begin_upload(p.FileKind.FIRMWARE, "m.mlb", p.MAX_FIRMWARE_SIZE + 1, bytes(32))
    assert big.value.code is p.ErrorCode.TOO_LARGE
