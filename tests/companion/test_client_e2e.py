"""End to end over a Bumble virtual link: the real companion client (bleak, via the Bumble backend)
against the real box (Bumble GATT peripheral, job queue, storage, engine)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import numpy as np
import pytest
from bleak import BleakScanner
from bleak.exc import BleakGATTProtocolError
from melisma import audio_io
from melisma import protocol as p
from melisma_companion.client import BoxError, LinkLostError, MelismaClient, NotPairedError


def run(coro, timeout: float = 90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def paired_client(rig, central=None):
    central = central or rig.central()
    client = rig.client(central)
    await client.connect()
    assert not client.bonded
    rig.box.pairing_window.open(30)
    await client.pair()
    assert client.bonded
    return client, central


def test_pair_upload_mix_download_is_what_the_engine_makes(rig_factory, audio_files, tmp_path):
    pipeline = pytest.importorskip("melisma.pipeline", reason="the engine (melisma.pipeline) is not in this tree yet")
    take, backing = audio_files
    rig = rig_factory(passkey_display=True)  # LEDs/display: passkey entry

    async def main():
        await rig.start_box()
        central = rig.central()
        found = await MelismaClient.scan(timeout=1.0, backend=central.scanner_backend)
        assert [b.address for b in found] == [rig.box.address]
        client = MelismaClient(found[0].device, backend=central.client_backend, request_timeout_s=30)
        await client.connect()
        assert client.box_version == p.PROTOCOL_VERSION and not client.bonded

        rig.box.pairing_window.open(30)
        # The phone asks the user, who reads the passkey off the box's display and types it in.
        central.passkey_provider = lambda: asyncio.wait_for(rig.passkeys.get(), 10)
        await client.pair()
        assert client.bonded and (await client.read_info()).passkey_display

        statuses = []
        client.status_listeners.append(statuses.append)
        controls = await client.set_controls(style="cpop", warmth=0.5, reverb=-0.3)
        assert (await client.read_controls()) == controls == rig.box.controls
        progress_seen = []
        for path, kind in ((take, "take"), (backing, "backing")):
            entry = await client.upload(path, kind, progress=lambda done, total: progress_seen.append((done, total)))
            assert entry.sha256 == hashlib.sha256(path.read_bytes()).digest()
        library = {(e.kind, e.name): e for e in await client.list_library()}
        assert library[(p.FileKind.TAKE, "take.wav")].size == take.stat().st_size
        assert library[(p.FileKind.BACKING, "backing.wav")].sha256 == hashlib.sha256(backing.read_bytes()).digest()

        job_progress = []
        final = await client.mix("take.wav", "backing.wav", "mix.wav",
                                 progress=lambda stage, f: job_progress.append((stage, f)), timeout_s=120)
        assert final.job_state is p.JobState.DONE
        out = tmp_path / "downloaded-mix.wav"
        await client.download("mix", "mix.wav", out)
        await client.disconnect()
        await rig.stop_box()
        return controls, statuses, job_progress, progress_seen, out

    controls, statuses, job_progress, progress_seen, out = run(main(), 180)
    # progress notifications arrived during the mix and never went backwards
    running = [s.progress for s in statuses if s.job_state is p.JobState.RUNNING]
    assert len(running) >= 3 and running == sorted(running)
    assert job_progress[-1] == ("done", 1.0)
    assert progress_seen[-1][0] == progress_seen[-1][1]
    # the downloaded mix is what the engine makes from the same inputs and settings
    reference = tmp_path / "reference-mix.wav"
    pipeline.mix_files(take, backing, reference, style="cpop", sliders=controls.engine_sliders())
    got, sr1 = audio_io.load_audio(out)
    want, sr2 = audio_io.load_audio(reference)
    assert sr1 == sr2 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_link_drop_mid_upload_resumes_from_offset(rig_factory, tmp_path):
    rig = rig_factory()
    data = os.urandom(60_000)
    src = tmp_path / "big-take.m4a"
    src.write_bytes(data)

    async def main():
        await rig.start_box()
        client, _ = await paired_client(rig)
        dropped = []

        def progress(done, total):
            if not dropped and done > total // 3:
                dropped.append(done)
                # the box drops the link (out of range, phone call...) in the middle of the upload
                conn = next(iter(rig.box.device.connections.values()))
                asyncio.get_running_loop().create_task(conn.disconnect())

        with pytest.raises(LinkLostError):
            await client.upload(src, "take", progress=progress, retries=0)
        # an interrupted upload never appears as a finished file
        await client.reconnect()
        assert client.bonded  # the stored bond encrypts the new link, no pairing needed
        assert await client.list_library("take") == []
        resumed = []
        entry = await client.upload(src, "take", progress=lambda d, t: resumed.append(d))
        await client.disconnect()
        await rig.stop_box()
        return dropped[0], resumed, entry, client.last_resume_offset

    dropped_at, resumed, entry, resume_offset = run(main())
    assert resume_offset >= dropped_at > 0  # it did not start over
    assert resumed[0] == resume_offset
    stored = tmp_path / "box" / "library" / "takes" / "big-take.m4a"
    assert stored.read_bytes() == data and entry.size == len(data)


def test_bad_chunk_is_rejected_and_resent(rig_factory, tmp_path):
    rig = rig_factory()
    data = os.urandom(20_000)
    src = tmp_path / "t.wav"
    src.write_bytes(data)

    class FlakyRadio(MelismaClient):
        """Corrupts one chunk on its way out, once, as a noisy radio might."""

        corrupted = 0

    async def main():
        await rig.start_box()
        central = rig.central()
        client = FlakyRadio(rig.box.address, backend=central.client_backend)
        await client.connect()
        rig.box.pairing_window.open(30)
        await client.pair()
        # a malformed chunk written with a response gets a typed ATT application error
        with pytest.raises(BleakGATTProtocolError) as exc:
            await client.client.write_gatt_char(p.TRANSFER_DATA_CHAR_UUID, b"\x50\x01", response=True)
        assert exc.value.code == p.att_error_code(p.ErrorCode.TRUNCATED)
        # corrupt the 5th chunk of a real upload: the box NACKs it and the client re-sends
        original = client.client.write_gatt_char
        count = [0]

        async def noisy(char, payload, response=None):
            if char == p.TRANSFER_DATA_CHAR_UUID:
                count[0] += 1
                if count[0] == 5:
                    payload = bytearray(payload)
                    payload[-1] ^= 0xFF
                    client.corrupted += 1
            return await original(char, payload, response=response)

        client.client.write_gatt_char = noisy
        events = []
        real_on_event = client._on_transfer_event

        def spy(sender, d):
            events.append(p.decode(bytes(d)))
            real_on_event(sender, d)

        await client.client.stop_notify(p.TRANSFER_CONTROL_CHAR_UUID)
        await client.client.start_notify(p.TRANSFER_CONTROL_CHAR_UUID, spy)
        entry = await client.upload(src, "take")
        await client.disconnect()
        await rig.stop_box()
        return client.corrupted, events, entry

    corrupted, events, _entry = run(main())
    assert corrupted == 1
    nacks = [e for e in events if isinstance(e, p.TransferNack)]
    assert len(nacks) == 1 and nacks[0].error is p.ErrorCode.BAD_CHECKSUM
    assert (tmp_path / "box" / "library" / "takes" / "t.wav").read_bytes() == data


def test_unbonded_central_is_refused(rig_factory, tmp_path):
    rig = rig_factory(passkey_display=True)

    async def main():
        await rig.start_box()
        central = rig.central()
        client = rig.client(central)
        await client.connect()  # the version check works before pairing: DIS is open
        assert client.serial_number and client.firmware and not client.bonded
        # everything else gives proper ATT errors
        codes = {}
        for uuid in (p.INFO_CHAR_UUID, p.STATUS_CHAR_UUID, p.CONTROLS_CHAR_UUID, p.LIBRARY_CHAR_UUID):
            with pytest.raises(BleakGATTProtocolError) as exc:
                await client.client.read_gatt_char(uuid)
            codes[uuid] = exc.value.code
        with pytest.raises(BleakGATTProtocolError) as exc:
            await client.client.write_gatt_char(p.COMMAND_CHAR_UUID, p.CancelCommand(1, 1).encode(), response=True)
        codes["command"] = exc.value.code
        with pytest.raises(NotPairedError):
            await client.upload(__file__, "take", "t.wav")
        # pairing outside the window is refused and leaves no bond
        with pytest.raises(NotPairedError):
            await client.pair(passkey=123456)
        assert rig.box.bonds.addresses == set()
        # a wrong passkey inside the window fails and leaves no bond
        rig.box.pairing_window.open(30)

        async def mistyped():
            shown = await asyncio.wait_for(rig.passkeys.get(), 10)
            return (shown + 1) % 1_000_000

        central.passkey_provider = mistyped
        with pytest.raises(NotPairedError):
            await client.pair()
        bonds_after_wrong = set(rig.box.bonds.addresses)
        central_bonded = await central.is_bonded(rig.box.address)
        await client.disconnect()
        await rig.stop_box()
        return codes, bonds_after_wrong, central_bonded

    codes, bonds_after_wrong, central_bonded = run(main())
    assert set(codes.values()) == {0x0F}  # Insufficient Encryption
    assert bonds_after_wrong == set() and not central_bonded
    assert not (tmp_path / "box" / "bonds.json").exists() or "C0:" not in (tmp_path / "box" / "bonds.json").read_text()


def test_bond_survives_box_restart_and_jobs_survive_disconnect(rig_factory, audio_files):
    pytest.importorskip("melisma.pipeline", reason="the engine (melisma.pipeline) is not in this tree yet")
    take, backing = audio_files
    rig = rig_factory()

    async def main():
        await rig.start_box()
        client, central = await paired_client(rig)
        await client.upload(take, "take")
        await client.upload(backing, "backing")
        job_id = await client.start_mix("take.wav", "backing.wav", "m.wav")
        await client.disconnect()  # the phone walks away; the job goes on
        await rig.box.jobs.wait(job_id, 120)
        await rig.stop_box()
        await rig.start_box()  # power cycle: the bond is read back from bonds.json
        again = rig.client(central)
        await again.connect()
        assert again.bonded
        status = await again.wait_for_job(job_id, timeout_s=5) if again.status.job_id == job_id else None
        names = [e.name for e in await again.list_library("mix")]
        await again.disconnect()
        await rig.stop_box()
        return status, names

    status, names = run(main(), 180)
    assert names == ["m.wav"]
    assert status is None or status.job_state is p.JobState.DONE


def test_incompatible_box_is_refused_clearly(rig_factory, monkeypatch):
    rig = rig_factory()
    monkeypatch.setattr(p, "software_revision", lambda version=None: "melisma-protocol/2.0")

    async def main():
        await rig.start_box()
        client = rig.client(rig.central())
        with pytest.raises(p.IncompatibleVersionError, match=r"protocol 2.0.*update the app"):
            await client.connect()
        assert not client.is_connected
        await rig.stop_box()

    run(main())


def test_download_resumes_from_a_partial_file(rig_factory, tmp_path):
    rig = rig_factory()
    data = os.urandom(30_000)

    async def main():
        await rig.start_box()
        (tmp_path / "box" / "library" / "mixes" / "m.wav").write_bytes(data)
        client, _ = await paired_client(rig)
        out = tmp_path / "m.wav"
        (tmp_path / "m.wav.part").write_bytes(data[:12_345])  # left by an earlier, dropped download
        seen = []
        await client.download("mix", "m.wav", out, progress=lambda d, t: seen.append(d))
        with pytest.raises(BoxError) as exc:
            await client.download("mix", "missing.wav", tmp_path / "x.wav")
        await client.disconnect()
        await rig.stop_box()
        return out, seen, exc.value

    out, seen, error = run(main())
    assert seen[0] == 12_345 and out.read_bytes() == data
    assert error.code is p.ErrorCode.NOT_FOUND and "m.wav" in str(error)


def test_scanner_backend_sees_the_service_uuid_and_name_in_scan_response(rig_factory):
    rig = rig_factory()

    async def main():
        await rig.start_box()
        central = rig.central()
        found = await BleakScanner.discover(timeout=1.0, backend=central.scanner_backend, return_adv=True,
                                            service_uuids=[p.MELISMA_SERVICE_UUID])
        await rig.stop_box()
        return found, rig

    found, _rig = run(main())
    (_dev, adv), = found.values()
    assert p.MELISMA_SERVICE_UUID in adv.service_uuids
