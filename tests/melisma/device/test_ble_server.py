"""The box's GATT server seen by a plain Bumble central (no Melisma client code): security and
robustness against malformed writes."""

from __future__ import annotations

import asyncio
import random

from bumble.att import ATT_Error
from bumble.controller import Controller
from bumble.core import UUID
from bumble.device import Device, DeviceConfiguration, Peer
from bumble.keys import MemoryKeyStore
from bumble.link import LocalLink
from bumble.pairing import PairingConfig, PairingDelegate
from bumble.transport.common import AsyncPipeSink
from melisma import protocol as p
from melisma.device.ble_server import MelismaBox, local_link_hci

BOX = "F0:00:00:00:00:AA"


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def setup(tmp_path, *, bonding: bool):
    link = LocalLink()
    src, sink = local_link_hci(link, BOX)
    box = MelismaBox(src, sink, data_dir=tmp_path, address=BOX, engine=object())
    await box.start()
    controller = Controller("central", link=link, public_address="C0:00:00:00:00:77")
    config = DeviceConfiguration()
    config.load_from_dict({"address": "C0:00:00:00:00:77"})
    central = Device.from_config_with_hci(config, controller, AsyncPipeSink(controller))
    central.keystore = MemoryKeyStore()
    central.pairing_config_factory = lambda c: PairingConfig(
        sc=True, mitm=False, bonding=bonding, delegate=PairingDelegate(),
        identity_address_type=PairingConfig.AddressType.RANDOM)
    await central.power_on()
    connection = await central.connect(BOX)
    peer = Peer(connection)
    await peer.request_mtu(517)
    await peer.discover_all()
    return box, connection, peer


def char(peer, uuid):
    return peer.get_characteristics_by_uuid(UUID(uuid))[0]


async def att_error(coro) -> int:
    try:
        await coro
    except ATT_Error as exc:
        return int(exc.error_code)
    return 0


def test_unbonded_and_unencrypted_centrals_get_att_errors(tmp_path):
    async def main():
        box, connection, peer = await setup(tmp_path, bonding=False)
        out = {"dis": await char(peer, p.SOFTWARE_REVISION_CHAR_UUID).read_value()}
        out["dis_write"] = await att_error(char(peer, p.SOFTWARE_REVISION_CHAR_UUID).write_value(b"x", True))
        out["plain"] = await att_error(char(peer, p.STATUS_CHAR_UUID).read_value())
        out["command_read"] = await att_error(char(peer, p.COMMAND_CHAR_UUID).read_value())
        # paired inside the window but without bonding: encrypted, yet still refused
        box.pairing_window.open(10)
        await connection.pair()
        assert connection.encryption
        out["encrypted_unbonded"] = await att_error(char(peer, p.STATUS_CHAR_UUID).read_value())
        out["encrypted_unbonded_write"] = await att_error(
            char(peer, p.CONTROLS_CHAR_UUID).write_value(p.Controls().encode(), True))
        await box.stop()
        return out

    out = run(main())
    assert out["dis"] == p.software_revision().encode()
    assert out["dis_write"] == 0x03  # Write Not Permitted: DIS strings stay read-only
    assert out["plain"] == 0x0F  # Insufficient Encryption
    assert out["command_read"] == 0x02  # Read Not Permitted (write-only)
    assert out["encrypted_unbonded"] == 0x05  # Insufficient Authentication
    assert out["encrypted_unbonded_write"] == 0x05


def test_malformed_writes_give_typed_errors_and_never_break_the_box(tmp_path):
    rng = random.Random(5)

    async def main():
        box, connection, peer = await setup(tmp_path, bonding=True)
        box.pairing_window.open(10)
        await connection.pair()
        replies = []
        await peer.subscribe(char(peer, p.COMMAND_CHAR_UUID), replies.append)
        controls = char(peer, p.CONTROLS_CHAR_UUID)
        bad_style = bytes([p.MessageType.CONTROLS, 9, 0, 0, 0, 0, 0, 0])
        errors = {"controls": await att_error(controls.write_value(bad_style, True))}
        await char(peer, p.COMMAND_CHAR_UUID).write_value(p.MixCommand(7, "t.wav", "b.wav", "m.wav").encode()[:-3], True)
        await char(peer, p.COMMAND_CHAR_UUID).write_value(p.MixCommand(8, "t.wav", "b.wav", "m.wav").encode(), True)
        # random and mutated messages to every writable characteristic
        writable = [p.CONTROLS_CHAR_UUID, p.COMMAND_CHAR_UUID, p.LIBRARY_CHAR_UUID,
                    p.TRANSFER_CONTROL_CHAR_UUID, p.TRANSFER_DATA_CHAR_UUID]
        for _i in range(300):
            valid = rng.choice([p.Controls().encode(), p.CancelCommand(1, 1).encode(), p.ListRequest().encode(),
                                p.UploadBegin(1, 1, "t.wav", 10, bytes(32)).encode(), p.Data(1, 0, b"abc").encode()])
            data = bytearray(valid if rng.random() < 0.7 else rng.randbytes(rng.randint(0, 40)))
            for _ in range(rng.randint(0, 3)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            await att_error(char(peer, rng.choice(writable)).write_value(bytes(data), rng.random() < 0.5))
        # still answering, with a sane status and no job stuck
        status = p.decode(await char(peer, p.STATUS_CHAR_UUID).read_value())
        info = p.decode(await char(peer, p.INFO_CHAR_UUID).read_value())
        await asyncio.sleep(0.1)
        await box.stop()
        return errors, [p.decode(r) for r in replies], status, info

    errors, replies, status, info = run(main())
    assert errors["controls"] == p.att_error_code(p.ErrorCode.MALFORMED)
    assert replies[0].request_id == 7 and replies[0].error in (p.ErrorCode.TRUNCATED, p.ErrorCode.BAD_NAME)
    assert replies[1].request_id == 8 and replies[1].error is p.ErrorCode.NOT_FOUND and "take" in replies[1].detail
    assert status.state is p.DeviceState.IDLE and status.job_state is not p.JobState.RUNNING
    assert info.version == p.PROTOCOL_VERSION
