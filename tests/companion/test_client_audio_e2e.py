"""Protocol 1.1 audio over a Bumble virtual link: the real client against the real box, whose audio
runs real PortAudio streams on a JACK dummy server (loopback wired with jack_connect)."""

from __future__ import annotations

import asyncio
import shutil
import threading

import numpy as np
import pytest
from melisma import audio_io
from melisma import protocol as p
from melisma_companion.client import BoxError

from tools.jack_dummy import JackDummy

SR = 48000


@pytest.fixture(scope="module")
def jack():
    if shutil.which("jackd") is None:
        pytest.skip("jackd is not installed (Debian's jackd2; `tools/run test` installs it)")
    with JackDummy(rate=SR, period=256) as server:
        yield server


def wire_later(jack, delay_s=0.6):
    t = threading.Timer(delay_s, jack.loop_portaudio)
    t.start()
    return t


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_calibrate_record_monitor_over_ble(jack, rig_factory, tmp_path):
    y = np.zeros(int(1.5 * SR), np.float32)
    y[int(0.4 * SR):int(0.4 * SR) + 480] = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(480) / SR)
    backing = tmp_path / "backing.wav"
    audio_io.write_audio(backing, np.stack([y, y]), sr=SR)
    rig = rig_factory()

    async def main():
        box = await rig.start_box()
        central = rig.central()
        client = rig.client(central)
        await client.connect()
        box.pairing_window.open(30)
        await client.pair()
        assert client.box_version == (1, 1) >= p.AUDIO_MIN_VERSION
        await client.upload(backing, "backing", "b.wav")
        await client.subscribe_audio()
        seen: list[p.AudioStatus] = []
        client.audio_status_listeners.append(seen.append)

        first = await client.read_audio_status()
        assert first.mode is p.AudioMode.IDLE and first.round_trip_ms is None

        # calibrate: the loop is connected after the test signal has started
        wire_later(jack)
        await client.calibrate_audio(timeout_s=10)
        with pytest.raises(BoxError) as busy:  # one activity at a time
            await client.monitor(True)
        assert busy.value.code is p.ErrorCode.BUSY
        done = await client.wait_audio_idle(timeout_s=20)
        assert done.error is p.ErrorCode.OK, done.detail
        assert done.round_trip_ms == pytest.approx(1000 * (256 + 128) / SR, abs=0.5)
        assert done.flags & p.AudioFlags.CALIBRATED and done.flags & p.AudioFlags.CALIBRATION_RELIABLE
        assert not done.bluetooth_output
        assert any(s.mode is p.AudioMode.CALIBRATING for s in seen)

        # record a take over the stored backing, lined up by that calibration
        wire_later(jack, 0.0)
        await client.record_take("b.wav", "t.wav", max_seconds=1)
        await asyncio.sleep(0.6)
        rec = await client.wait_audio_idle(timeout_s=20)
        assert rec.error is p.ErrorCode.OK, rec.detail
        assert any(s.mode is p.AudioMode.RECORDING and s.input_level_db > -20 for s in seen), seen[-5:]
        take, sr = audio_io.load_audio(box.storage.existing(p.FileKind.TAKE, "t.wav"), mono=True)
        assert sr == SR and len(take) == SR
        onset = int(np.argmax(np.abs(take) > 0.1))
        assert abs(onset - int(0.4 * SR)) <= 0.001 * SR

        # monitor on, a slider moves the live chain, monitor off
        await client.monitor(True)
        for _ in range(100):  # the stream opens on the audio thread: wait for it (a loaded machine is slow)
            await asyncio.sleep(0.1)
            if box.audio._proc is not None and (await client.read_audio_status()).mode is p.AudioMode.MONITORING:
                break
        assert (await client.read_audio_status()).mode is p.AudioMode.MONITORING
        proc = box.audio._proc
        chain_before = proc.chain
        await client.set_controls(style="cpop", reverb=0.6)
        for _ in range(50):
            await asyncio.sleep(0.1)
            if proc.chain is not chain_before:
                break
        assert proc.chain is not chain_before
        with pytest.raises(BoxError) as corr:
            await client.monitor(True, correction=0.5)
        assert "not in this firmware" in corr.value.args[0] or corr.value.code is p.ErrorCode.BUSY
        await client.monitor(False)
        off = await client.wait_audio_idle(timeout_s=10)
        assert off.error is p.ErrorCode.OK, off.detail

        # play a stored file
        await client.play("backing", "b.wav")
        assert (await client.wait_audio_idle(timeout_s=20)).error is p.ErrorCode.OK
        await client.disconnect()
        await rig.stop_box()

    run(main())
