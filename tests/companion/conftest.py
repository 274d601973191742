"""Fixtures for the companion tests: the real box and real bleak client over a Bumble virtual link."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from bumble.link import LocalLink
from melisma import audio_io
from melisma.device.ble_server import MelismaBox, local_link_hci
from melisma_companion.bumble_backend import BumbleCentral
from melisma_companion.client import MelismaClient

BOX_ADDRESS = "F0:11:22:33:44:55"
SR = 48000


class Rig:
    """A LocalLink with one box (restartable on the same data directory) and centrals on demand."""

    def __init__(self, data_dir: Path, *, engine=None, passkey_display: bool = False, update_root: Path | None = None):
        self.link = LocalLink()
        self.data_dir = data_dir
        self.update_root = update_root
        self.engine = engine
        self.passkey_display = passkey_display
        self.passkeys: asyncio.Queue = asyncio.Queue()
        self.box: MelismaBox | None = None
        self._n = 0

    async def start_box(self) -> MelismaBox:
        src, sink = local_link_hci(self.link, BOX_ADDRESS)
        self._box_controller = src
        show = self.passkeys.put_nowait if self.passkey_display else None
        extra = {"update_root": self.update_root} if self.update_root is not None else {}
        self.box = MelismaBox(src, sink, data_dir=self.data_dir, address=BOX_ADDRESS, engine=self.engine,
                              show_passkey=show, **extra)
        await self.box.start()
        return self.box

    async def stop_box(self) -> None:
        """Power the box off and take its controller off the link (as unplugging it would)."""
        await self.box.stop()
        self.link.remove_controller(self._box_controller)
        self.box = None

    def central(self, address: str | None = None, keystore_path=None) -> BumbleCentral:
        self._n += 1
        address = address or f"C0:00:00:00:00:{self._n:02X}"
        return BumbleCentral.on_local_link(self.link, address, keystore_path=keystore_path)

    def client(self, central: BumbleCentral) -> MelismaClient:
        return MelismaClient(BOX_ADDRESS, backend=central.client_backend, request_timeout_s=30)


@pytest.fixture
def rig_factory(tmp_path):
    def make(data_dir: Path | None = None, **kwargs) -> Rig:
        return Rig(data_dir or tmp_path / "box", **kwargs)
    return make


@pytest.fixture
def audio_files(tmp_path):
    """A 3-second sung-like take (vibrato) with speaker bleed, and a stereo backing, as WAV files."""
    t = np.arange(3 * SR) / SR
    f0 = 220 * 2 ** (0.3 * np.sin(2 * np.pi * 5.5 * t) / 12)
    take = (0.2 * np.sin(2 * np.pi * np.cumsum(f0) / SR) * np.minimum(1, t * 4)).astype(np.float32)
    rng = np.random.default_rng(1)
    backing = np.stack([0.1 * np.sin(2 * np.pi * 110 * t), 0.1 * np.sin(2 * np.pi * 165 * t)])
    backing = (backing + 0.01 * rng.standard_normal(backing.shape)).astype(np.float32)
    # recorded with the phone speaker on: the backing bleeds into the take 120 ms late, so the box
    # can measure the offset (a take without bleed or latency is refused since issue 13)
    lag = int(0.120 * SR)
    take[lag:] += 0.5 * backing.mean(axis=0)[:-lag]
    phone = tmp_path / "phone"
    phone.mkdir()
    audio_io.write_audio(phone / "take.wav", take, sr=SR)
    audio_io.write_audio(phone / "backing.wav", backing, sr=SR)
    return phone / "take.wav", phone / "backing.wav"

