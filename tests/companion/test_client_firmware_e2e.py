"""Protocol 1.1 firmware updates over a Bumble virtual link: the real companion client uploads a real
signed bundle (built by tools/build-bundle) to the real box, which hands it to the real updater.

On a box, ``melisma-update.path`` (root) starts ``melisma-update install-request`` when the box
service writes its install request. systemd is not PID 1 here, so :func:`updater_when_asked` plays
that path unit: it waits for the request file the box wrote and runs the same command on the
scratch root, in its own process. Bundles are built with ``--deps external`` and slots use this
environment's site-packages (``--dev-site-packages``), as in tests/melisma/update.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from bleak.exc import BleakGATTProtocolError
from melisma import protocol as p
from melisma.update.request import REQUEST_NAME, RESULT_NAME
from melisma_companion.client import BoxError, LinkLostError, NotPairedError, UpdateFailedError

from tests.melisma.update.conftest import SITE, build, install_args, run_update, slot_version, snapshot, status

UPDATE = [sys.executable, "-m", "melisma.update.cli"]


def run(coro, timeout: float = 240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Firmware:
    def __init__(self, d: Path):
        self.keys = d / "keys"
        run_update("keygen", "--out", str(self.keys), check=True)
        self.v1 = build(d / "melisma-1.0.0.mlb", "1.0.0", self.keys / "signing.key")
        self.v2 = build(d / "melisma-2.0.0.mlb", "2.0.0", self.keys / "signing.key")
        data = bytearray(self.v2.read_bytes())
        data[len(data) // 2] ^= 0x01  # one flipped bit inside the payload
        self.tampered = d / "tampered-2.0.0.mlb"
        self.tampered.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def firmware(tmp_path_factory) -> Firmware:
    return Firmware(tmp_path_factory.mktemp("firmware"))


@pytest.fixture
def root_v1(firmware, tmp_path) -> Path:
    """A scratch root with 1.0.0 installed by the real updater (first install trusts the test key)."""
    root = tmp_path / "root"
    run_update(*install_args(firmware.v1, root, "--trusted-keys", str(firmware.keys)), check=True)
    return root


def data_dir(root: Path) -> Path:
    return root / "var" / "lib" / "melisma"


async def updater_when_asked(root: Path, *extra: str, timeout_s: float = 60) -> tuple[dict, int, str]:
    """What melisma-update.path does: once the box's install request exists, run the updater on it."""
    request = data_dir(root) / "firmware" / REQUEST_NAME
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not request.exists():
        assert loop.time() < end, "the box never wrote an install request"
        await asyncio.sleep(0.05)
    asked = json.loads(request.read_text())
    proc = await asyncio.create_subprocess_exec(
        *UPDATE, "install-request", "--root", str(root), "--dev-site-packages", SITE, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return asked, proc.returncode, out.decode()


async def paired(rig):
    client = rig.client(rig.central())
    await client.connect()
    rig.box.pairing_window.open(30)
    await client.pair()
    assert client.bonded and client.box_version == (1, 1)
    return client


def distinct(phases):
    out = []
    for ph in phases:
        if not out or out[-1] is not ph:
            out.append(ph)
    return out


def test_upload_resumes_then_install_switches_across_a_service_restart(firmware, root_v1, rig_factory, tmp_path):
    rig = rig_factory(data_dir=data_dir(root_v1), update_root=root_v1)
    take = tmp_path / "t.wav"
    take.write_bytes(os.urandom(3000))

    async def main():
        await rig.start_box()
        client = await paired(rig)
        await client.subscribe_update()
        notified: list[p.UpdateStatus] = []
        client.update_status_listeners.append(notified.append)
        idle = await client.read_update_status()
        await client.upload(take, "take")

        dropped = []

        def drop_at_a_third(done, total):
            if not dropped and done > total // 3:
                dropped.append(done)
                conn = next(iter(rig.box.device.connections.values()))
                asyncio.get_running_loop().create_task(conn.disconnect())

        with pytest.raises(LinkLostError):
            await client.upload_firmware(firmware.v2, progress=drop_at_a_third, retries=0)
        await client.reconnect()
        half_done = await client.list_library("firmware")
        resumed = []
        entry = await client.upload_firmware(firmware.v2, progress=lambda d, t: resumed.append(d))
        resume_offset = client.last_resume_offset
        listing_all = await client.list_library()  # what a 1.0 client sees
        listing_fw = await client.list_library("firmware")

        # the service restarts after the switch (systemctl restart on a box): do that here
        restarted = []

        def on_progress(phase, fraction):
            phases.append(phase)
            if phase is p.UpdatePhase.SWITCHED and not restarted:
                restarted.append(fraction)

                async def restart():  # the radio is reset with the service: the link drops first
                    for conn in list(rig.box.device.connections.values()):
                        await conn.disconnect()
                    await rig.stop_box()
                    await rig.start_box()
                asyncio.get_running_loop().create_task(restart())

        phases: list[p.UpdatePhase] = []
        await client.subscribe_update()
        updater = asyncio.create_task(updater_when_asked(root_v1))
        final = await client.install_firmware(progress=on_progress)
        asked, rc, out = await updater
        again = await client.read_update_status()  # after the restart, from the updater's files
        await client.disconnect()
        await rig.stop_box()
        return (idle, dropped[0], half_done, resumed, resume_offset, entry, listing_all, listing_fw, phases, restarted,
                notified, final, asked, rc, out, again)

    (idle, dropped_at, half_done, resumed, resume_offset, entry, listing_all, listing_fw, phases, restarted,
     notified, final, asked, rc, out, again) = run(main())
    assert idle.phase is p.UpdatePhase.IDLE and idle.running_version
    # resumable like any upload: an interrupted bundle is not listed, the upload resumes from its offset
    assert half_done == [] and resume_offset >= dropped_at > 0 and resumed[0] == resume_offset
    stored = data_dir(root_v1) / "library" / "firmware" / "melisma-2.0.0.mlb"
    assert stored.read_bytes() == firmware.v2.read_bytes() and entry.size == stored.stat().st_size
    # bundles live beside the audio folders and a listing of all kinds (1.0) leaves them out
    assert [e.name for e in listing_all] == ["t.wav"]
    assert [(e.kind, e.name) for e in listing_fw] == [(p.FileKind.FIRMWARE, "melisma-2.0.0.mlb")]
    # the request the box wrote, taken and run by the updater
    assert asked["bundle"] == "melisma-2.0.0.mlb" and asked["allow_downgrade"] is False
    assert rc == 0, out
    assert not (data_dir(root_v1) / "firmware" / REQUEST_NAME).exists()
    # progress and outcome in the update status, across the restart
    assert restarted, f"the switch was never seen: {phases}"
    assert final.phase is p.UpdatePhase.INSTALLED and final.version == "2.0.0" and final.progress == 1.0
    assert final.bundle == "melisma-2.0.0.mlb" and again == final
    assert p.UpdatePhase.INSTALLING in phases and phases[-1] is p.UpdatePhase.INSTALLED
    assert [ph.value for ph in distinct(phases)] == sorted(ph.value for ph in distinct(phases))
    seen = distinct(s.phase for s in notified)
    # notified as it goes (the last ones may come while the client is reconnecting: it reads them then)
    assert seen[0] is p.UpdatePhase.REQUESTED and p.UpdatePhase.INSTALLING in seen, seen
    assert [ph.value for ph in seen] == sorted(ph.value for ph in seen)
    installing = [s.progress for s in notified if s.phase is p.UpdatePhase.INSTALLING]
    assert installing == sorted(installing) and 0 < installing[0] < 1
    # and the box really runs 2.0.0 now, 1.0.0 kept as the previous slot
    st = status(root_v1)
    assert (st["active_version"], st["previous_version"]) == ("2.0.0", "1.0.0")
    assert slot_version(root_v1 / "opt" / "melisma" / "current") == "2.0.0"


def test_tampered_bundle_is_refused_and_a_failed_health_check_rolls_back(firmware, root_v1, rig_factory):
    rig = rig_factory(data_dir=data_dir(root_v1), update_root=root_v1)
    before = snapshot(root_v1 / "opt")

    async def main():
        await rig.start_box()
        client = await paired(rig)
        await client.upload_firmware(firmware.tampered)  # the upload's own digest matches: stored as sent
        with pytest.raises(BoxError) as missing:
            await client.install_firmware("nope-9.9.9.mlb")
        updater = asyncio.create_task(updater_when_asked(root_v1))
        with pytest.raises(UpdateFailedError) as refused:
            await client.install_firmware()
        asked, rc, out = await updater
        unchanged = snapshot(root_v1 / "opt")
        result = json.loads((data_dir(root_v1) / "firmware" / RESULT_NAME).read_text())

        # a second install while one is waiting for the updater is refused as busy
        await client.upload_firmware(firmware.v2)
        await client._command(lambda rid: p.FirmwareInstallCommand(rid, "melisma-2.0.0.mlb"))
        with pytest.raises(BoxError) as busy:
            await client._command(lambda rid: p.FirmwareInstallCommand(rid, "melisma-2.0.0.mlb"))
        waiting = await client.read_update_status()
        with pytest.raises(BoxError) as in_use:  # the bundle the updater is about to read stays
            await client.delete("firmware", "melisma-2.0.0.mlb")
        # the updater's health check gets 0.2 s, too short for the new slot's self-test: rolled back
        updater = asyncio.create_task(updater_when_asked(root_v1, "--health-timeout", "0.2"))
        rolled = await client.wait_for_update(timeout_s=120)
        _, rc2, out2 = await updater
        await client.delete("firmware", "tampered-2.0.0.mlb")  # once there is an outcome, bundles go
        await client.delete("firmware", "melisma-2.0.0.mlb")
        left = await client.list_library("firmware")
        await client.disconnect()
        await rig.stop_box()
        return (missing.value, refused.value, asked, rc, out, unchanged, result, busy.value, waiting, in_use.value,
                rolled, rc2, out2, left)

    (missing, refused, asked, rc, out, unchanged, result, busy, waiting, in_use, rolled, rc2, out2,
     left) = run(main())
    assert missing.code is p.ErrorCode.NOT_FOUND and "no firmware named 'nope-9.9.9.mlb'" in str(missing)
    assert asked["bundle"] == "tampered-2.0.0.mlb" and rc == 12, out
    st = refused.status
    assert st.phase is p.UpdatePhase.REFUSED and st.bundle == "tampered-2.0.0.mlb"
    assert "does not match its SHA-256" in st.reason and "tampered" in st.reason
    assert result["outcome"] == "refused" and result["reason"].endswith(st.reason) and st.reason.startswith("tampered")
    assert unchanged == before  # nothing under /opt/melisma changed
    assert busy.code is p.ErrorCode.BUSY and "already requested" in str(busy)
    assert waiting.phase is p.UpdatePhase.REQUESTED and waiting.bundle == "melisma-2.0.0.mlb"
    assert in_use.code is p.ErrorCode.BUSY and left == []
    assert rc2 == 12, out2
    assert rolled.phase is p.UpdatePhase.ROLLED_BACK and rolled.version == "2.0.0"
    assert "health check" in rolled.reason and "rolled back to slot a" in rolled.reason
    st = status(root_v1)
    assert (st["active_slot"], st["active_version"]) == ("a", "1.0.0")


def test_unbonded_central_cannot_upload_or_install_and_a_box_without_slots_refuses(firmware, rig_factory, tmp_path):
    root = tmp_path / "not-installed"
    rig = rig_factory(update_root=root)

    async def main():
        box = await rig.start_box()
        stranger = rig.client(rig.central())
        await stranger.connect()
        assert not stranger.bonded and stranger.box_version == (1, 1)
        with pytest.raises(NotPairedError):
            await stranger.upload_firmware(firmware.v2)
        with pytest.raises(BleakGATTProtocolError) as install:
            await stranger.client.write_gatt_char(p.COMMAND_CHAR_UUID,
                                                  p.FirmwareInstallCommand(1, "melisma-2.0.0.mlb").encode(), True)
        with pytest.raises(BleakGATTProtocolError) as read:
            await stranger.client.read_gatt_char(p.UPDATE_STATUS_CHAR_UUID)
        await stranger.disconnect()
        partial = sorted(x.name for x in (box.data_dir / "library" / "partial").iterdir())
        # a bonded client on a box that melisma-update did not install: the upload works, install is refused
        client = await paired(rig)
        await client.upload_firmware(firmware.v2)
        with pytest.raises(BoxError) as no_slots:
            await client.install_firmware()
        st = await client.read_update_status()
        await client.disconnect()
        await rig.stop_box()
        return install.value.code, read.value.code, partial, no_slots.value, st

    install_code, read_code, partial, no_slots, st = run(main())
    assert install_code == 0x0F and read_code == 0x0F  # Insufficient Encryption
    assert partial == []  # not one byte of the stranger's upload was taken
    assert no_slots.code is p.ErrorCode.BAD_STATE and "not installed with melisma-update" in str(no_slots)
    assert st.phase is p.UpdatePhase.IDLE
    assert not (tmp_path / "box" / "firmware" / REQUEST_NAME).exists()
