"""The box's side of a BLE firmware update, without the companion client: the update status the box
reads back from a real updater (including one killed half-way), and the security of the new
command and characteristic seen by a plain Bumble central."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
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
from melisma.device.firmware import read_update_status
from melisma.device.storage import Storage
from melisma.update.install import KILL_ENV
from melisma.update.request import REQUEST_NAME, write_request

from tests.melisma.update.conftest import SITE, build, install_args, run_update, status

BOX = "F0:00:00:00:00:AB"
#: A refusal reason too long for a notification at the minimum MTU (as the updater writes them).
REASON = "signature by key 0123456789abcdef, which is not in /etc/melisma/trusted-keys; " * 2


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("fw")
    run_update("keygen", "--out", str(d / "keys"), check=True)
    return d / "keys", build(d / "melisma-1.0.0.mlb", "1.0.0", d / "keys" / "signing.key"), \
        build(d / "melisma-2.0.0.mlb", "2.0.0", d / "keys" / "signing.key")


def test_an_updater_killed_half_way_shows_as_failed_and_the_box_stays_on_its_slot(bundles, tmp_path):
    keys, v1, v2 = bundles
    root = tmp_path / "root"
    run_update(*install_args(v1, root, "--trusted-keys", str(keys)), check=True)
    data = root / "var" / "lib" / "melisma"
    store = Storage(data / "library")
    (data / "library" / "firmware" / v2.name).write_bytes(v2.read_bytes())
    assert store.list() == [] and [e.name for e in store.list(p.FileKind.FIRMWARE)] == [v2.name]

    write_request(data, v2.name)
    asked = read_update_status(data, root)
    # the updater SIGKILLs itself while it builds the new slot (MELISMA_UPDATE_KILL_AT, as the kill tests do)
    env = {**os.environ, KILL_ENV: "venv"}
    proc = subprocess.Popen([sys.executable, "-m", "melisma.update.cli", "install-request", "--root", str(root),
                             "--dev-site-packages", SITE], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc.communicate(timeout=300)
    after = read_update_status(data, root)
    result = json.loads((data / "firmware" / "result.json").read_text())

    assert asked.phase is p.UpdatePhase.REQUESTED and asked.bundle == v2.name
    assert proc.returncode == -9
    assert result["outcome"] == "running" and result["pid"] == proc.pid  # it never got to write an outcome
    assert after.phase is p.UpdatePhase.FAILED and after.phase.finished
    assert "the updater stopped before it finished" in after.reason and after.bundle == v2.name
    assert not (data / "firmware" / REQUEST_NAME).exists()
    st = status(root)
    assert (st["active_slot"], st["active_version"]) == ("a", "1.0.0")


async def _central(link, address, *, bonding):
    controller = Controller(f"central-{address}", link=link, public_address=address)
    config = DeviceConfiguration()
    config.load_from_dict({"address": address})
    central = Device.from_config_with_hci(config, controller, AsyncPipeSink(controller))
    central.keystore = MemoryKeyStore()
    central.pairing_config_factory = lambda c: PairingConfig(
        sc=True, mitm=False, bonding=bonding, delegate=PairingDelegate(),
        identity_address_type=PairingConfig.AddressType.RANDOM)
    await central.power_on()
    connection = await central.connect(BOX)
    peer = Peer(connection)
    await peer.request_mtu(p.MIN_ATT_MTU)  # the smallest link the protocol works with
    await peer.discover_all()
    return connection, peer


async def _att_error(coro) -> int:
    try:
        await coro
    except ATT_Error as exc:
        return int(exc.error_code)
    return 0


def test_update_command_and_status_need_a_bonded_link_and_notifications_fit_the_smallest_mtu(tmp_path):
    async def main():
        link = LocalLink()
        src, sink = local_link_hci(link, BOX)
        box = MelismaBox(src, sink, data_dir=tmp_path / "data", address=BOX, engine=object(),
                         update_root=tmp_path / "root")
        await box.start()
        out = {}
        # encrypted but not bonded: Insufficient Authentication, and no request written
        connection, peer = await _central(link, "C0:00:00:00:00:71", bonding=False)
        box.pairing_window.open(10)
        await connection.pair()
        upd = peer.get_characteristics_by_uuid(UUID(p.UPDATE_STATUS_CHAR_UUID))[0]
        cmd = peer.get_characteristics_by_uuid(UUID(p.COMMAND_CHAR_UUID))[0]
        out["read"] = await _att_error(upd.read_value())
        out["install"] = await _att_error(cmd.write_value(p.FirmwareInstallCommand(1, "x.mlb").encode(), True))
        await connection.disconnect()
        # bonded, at the minimum MTU: a status with a long reason is notified cut to fit, read whole
        connection, peer = await _central(link, "C0:00:00:00:00:72", bonding=True)
        box.pairing_window.open(10)
        await connection.pair()
        upd = peer.get_characteristics_by_uuid(UUID(p.UPDATE_STATUS_CHAR_UUID))[0]
        got: list[bytes] = []
        await peer.subscribe(upd, lambda value: got.append(bytes(value)))
        fw = box.data_dir / "firmware"
        fw.mkdir(parents=True, exist_ok=True)
        (fw / "result.json").write_text(json.dumps({"outcome": "refused", "bundle": "melisma-9.0.0.mlb",
                                                    "reason": REASON, "time": 1.0}))
        box.firmware.poll()
        await asyncio.sleep(0.3)
        out["read_whole"] = p.decode(await upd.read_value())
        await box.stop()
        return out, got

    out, got = asyncio.run(asyncio.wait_for(main(), 60))
    assert out["read"] == 0x05 and out["install"] == 0x05
    assert not (tmp_path / "data" / "firmware" / REQUEST_NAME).exists()
    notified = [p.decode(g) for g in got]
    assert notified and all(len(g) <= p.MAX_NOTIFICATION_SIZE for g in got)
    last = notified[-1]
    assert last.phase is p.UpdatePhase.REFUSED and last.bundle == "melisma-9.0.0.mlb"
    whole = out["read_whole"]
    assert whole.reason == REASON and whole.reason.startswith(last.reason)
    assert len(last.reason) < len(whole.reason)
