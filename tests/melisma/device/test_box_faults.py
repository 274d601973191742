"""Fault tests against a real ``melisma-device`` process on a virtual link (issue 16).

Each "life" of the box is three real parts: Bumble's two virtual controllers on one link in their
own process (``bumble.apps.controllers``, TCP on 127.0.0.1), the box (``python -m
melisma.device.service run``) on one of them, and the real companion client (bleak through the
Bumble backend) here on the other. The box is killed with SIGKILL in the middle of things and
started again on the same data directory; the phone's bond is kept in a key file, as a phone does.

Disk full is a real full file system: the box runs in a user and mount namespace with a small
tmpfs as its data directory (``unshare``); where the kernel does not allow that, those tests are
skipped and the in-process tests (test_hardening.py) cover the same code with a real floor.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble.transport import open_transport
from melisma import audio_io
from melisma import protocol as p
from melisma_companion.bumble_backend import BumbleCentral
from melisma_companion.client import BoxError, LinkLostError, MelismaClient

BOX = "F0:16:16:16:16:01"
PHONE = "C0:16:16:16:16:02"
SR = 48000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def _tmpfs_possible() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                            "mount -t tmpfs -o size=64k tmpfs /tmp && echo ok"], capture_output=True, text=True)
    return probe.stdout.strip() == "ok"


TMPFS = _tmpfs_possible()
needs_tmpfs = pytest.mark.skipif(not TMPFS, reason="no user+mount namespaces here (unshare): no small real file system")


class Life:
    """One run of the box process with a virtual link and a phone (central) in this process."""

    def __init__(self, tmp_path: Path, *, pairable: bool = False, tmpfs_kib: int | None = None,
                 config: str | None = None, expect_ready: bool = True, extra: tuple[str, ...] = ()):
        self.tmp_path = tmp_path
        self.data_dir = tmp_path / "box"
        self.pairable, self.tmpfs_kib, self.config, self.expect_ready, self.extra = (
            pairable, tmpfs_kib, config, expect_ready, extra)
        self.log_path = tmp_path / f"box-{time.monotonic_ns()}.log"
        self.procs: list[subprocess.Popen] = []
        self.transport = None
        self.client: MelismaClient | None = None
        self.box: subprocess.Popen | None = None

    async def __aenter__(self) -> Life:
        try:
            return await self._start()
        except BaseException:
            self._terminate()
            raise

    async def _start(self) -> Life:
        p1, p2 = _free_port(), _free_port()
        self.procs.append(subprocess.Popen([sys.executable, "-m", "bumble.apps.controllers",
                                            f"tcp-server:127.0.0.1:{p1}", f"tcp-server:127.0.0.1:{p2}"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for_port(p1)
        _wait_for_port(p2)
        cmd = [sys.executable, "-m", "melisma.device.service", "run", "--transport", f"tcp-client:127.0.0.1:{p1}",
               "--address", BOX, "--data-dir", str(self.data_dir), *self.extra]
        if self.config:
            cfg = self.tmp_path / "box.toml"
            cfg.write_text(self.config)
            cmd += ["--config", str(cfg)]
        if self.pairable:
            cmd.append("--pairable")
        self.data_dir.mkdir(exist_ok=True)
        if self.tmpfs_kib:
            cmd = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                   f'mount -t tmpfs -o size={self.tmpfs_kib}k tmpfs "$0" && exec "$@"', str(self.data_dir), *cmd]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.log = open(self.log_path, "w")  # noqa: SIM115 -- the box writes to it for its whole life
        self.box = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.procs.append(self.box)
        line = await asyncio.wait_for(asyncio.to_thread(self.box.stdout.readline), 60)
        if not self.expect_ready:
            return self
        assert "ready" in line, f"box did not start: {line!r}\n{self.log_text()}"
        self.transport = await open_transport(f"tcp-client:127.0.0.1:{p2}")
        central = BumbleCentral.with_hci(self.transport.source, self.transport.sink, PHONE,
                                         keystore_path=str(self.tmp_path / "phone-keys.json"))
        self.central = central
        self.client = MelismaClient(BOX, backend=central.client_backend, request_timeout_s=30)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.disconnect(), 5)
        if self.transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.close()
        self._terminate()

    def _terminate(self) -> None:
        """Stop the box and the virtual link, synchronously (a cancelled test must not leave processes)."""
        for proc in reversed(self.procs):  # the box first, then its radio (the virtual link)
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if hasattr(self, "log"):
            self.log.close()

    async def paired(self) -> MelismaClient:
        await self.client.connect()
        if not self.client.bonded:
            await self.client.pair()
        assert self.client.bonded
        return self.client

    def kill(self) -> None:
        """SIGKILL the box: no clean-up of any kind runs.

        A dead box's radio goes quiet and the phone's controller notices the link is gone (the
        supervision timeout); the virtual box controller outlives the box process here, so the
        phone's side of that is done by hand: its connection is dropped.
        """
        os.kill(self.box.pid, signal.SIGKILL)
        self.box.wait(10)
        for connection in list(self.central.device.connections.values()):
            asyncio.get_running_loop().create_task(connection.disconnect())

    def inside(self, relative: str) -> Path:
        """A path in the box's data directory as the box sees it (through its mount namespace)."""
        if self.tmpfs_kib:
            return Path(f"/proc/{self.box.pid}/root") / str(self.data_dir).lstrip("/") / relative
        return self.data_dir / relative

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")


def run(coro, timeout: float = 240):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _audio(tmp_path: Path, seconds: float = 2.0) -> tuple[Path, Path]:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 220 * 2 ** (0.3 * np.sin(2 * np.pi * 5.5 * t) / 12)
    take = (0.2 * np.sin(2 * np.pi * np.cumsum(f0) / SR) * np.minimum(1, t * 4)).astype(np.float32)
    backing = np.stack([0.1 * np.sin(2 * np.pi * 110 * t), 0.1 * np.sin(2 * np.pi * 165 * t)])
    backing = (backing + 0.01 * np.random.default_rng(1).standard_normal(backing.shape)).astype(np.float32)
    lag = int(0.120 * SR)  # recorded with the phone speaker on: the backing bleeds in 120 ms late
    take[lag:] += 0.5 * backing.mean(axis=0)[:-lag]
    phone = tmp_path / "phone"
    phone.mkdir(exist_ok=True)
    audio_io.write_audio(phone / "take.wav", take, sr=SR, overwrite=True)
    audio_io.write_audio(phone / "backing.wav", backing, sr=SR, overwrite=True)
    return phone / "take.wav", phone / "backing.wav"


def _no_tracebacks(log: str) -> None:
    assert "Traceback" not in log, log[-3000:]


def _leftovers(folder: Path) -> list[str]:
    return sorted(e.name for e in folder.iterdir() if e.name.startswith("."))


# ----------------------------------------------------------------------------------------------


def test_sigkill_mid_upload_resumes_after_restart(tmp_path):
    data = os.urandom(150_000)
    src = tmp_path / "long-take.m4a"
    src.write_bytes(data)

    async def main():
        async with Life(tmp_path, pairable=True) as life:
            client = await life.paired()
            killed = []

            def progress(done, total):
                if not killed and done > total // 3:
                    killed.append(done)
                    life.kill()

            with pytest.raises((LinkLostError, BoxError)):
                await client.upload(src, "take", progress=progress, retries=0)
        async with Life(tmp_path) as life:
            client = await life.paired()  # the bond survived the kill: no pairing
            assert await client.list_library("take") == []  # never a half file under its name
            entry = await client.upload(src, "take")
            log = life.log_text()
            return killed[0], client.last_resume_offset, entry, log

    killed_at, resumed_from, entry, log = run(main())
    assert resumed_from >= killed_at // 2 > 0  # it went on from the kept partial, not from 0
    assert entry.sha256 == hashlib.sha256(data).digest()
    assert (tmp_path / "box" / "library" / "takes" / "long-take.m4a").read_bytes() == data
    _no_tracebacks(log)


def test_sigkill_at_commit_never_leaves_a_half_file(tmp_path):
    data = os.urandom(80_000)
    src = tmp_path / "t.m4a"
    src.write_bytes(data)

    async def main():
        async with Life(tmp_path, pairable=True) as life:
            client = await life.paired()
            original = client._control

            async def control(msg):
                await original(msg)
                if isinstance(msg, p.UploadCommit):
                    life.kill()  # right after the commit request reached the box

            client._control = control
            with contextlib.suppress(LinkLostError, BoxError, asyncio.TimeoutError):
                await client.upload(src, "take", retries=0)
        stored = tmp_path / "box" / "library" / "takes" / "t.m4a"
        after_kill = stored.read_bytes() if stored.exists() else None
        async with Life(tmp_path) as life:
            client = await life.paired()
            entry = await client.upload(src, "take")
            return after_kill, entry, client.last_resume_offset

    after_kill, entry, resumed_from = run(main())
    assert after_kill in (None, data)  # either committed whole or not at all
    assert resumed_from == len(data)  # every byte was kept: only the commit is repeated
    assert entry.sha256 == hashlib.sha256(data).digest()


@pytest.mark.parametrize("kill_at", [0.05, 0.5])
def test_sigkill_mid_job_reports_it_interrupted_with_its_id(tmp_path, kill_at):
    take, backing = _audio(tmp_path, 3.0)

    async def main():
        async with Life(tmp_path, pairable=True) as life:
            client = await life.paired()
            await client.upload(take, "take")
            await client.upload(backing, "backing")
            seen = asyncio.Event()

            def on_status(status):
                if status.job_state is p.JobState.RUNNING and status.progress >= kill_at and not seen.is_set():
                    seen.set()
                    life.kill()

            client.status_listeners.append(on_status)
            job_id = await client.start_mix("take.wav", "backing.wav", "mix.wav")
            await asyncio.wait_for(seen.wait(), 120)
        mixes = tmp_path / "box" / "library" / "mixes"
        left_after_kill = _leftovers(mixes)
        async with Life(tmp_path) as life:
            client = await life.paired()
            status = await client.read_status()
            with pytest.raises(BoxError) as failed:
                await client.wait_for_job(job_id, timeout_s=10)
            # re-run on request (the box's control socket; the front panel and `melisma-device` use it)
            reader, writer = await asyncio.open_unix_connection(str(life.data_dir / "control.sock"))
            writer.write(f"rerun {job_id}\n".encode())
            answer = (await reader.readline()).decode()
            writer.close()
            assert answer.startswith(f"ok job {job_id} queued again as job "), answer
            next_id = int(answer.split()[-1])
            final = await client.wait_for_job(next_id, timeout_s=180)
            log = life.log_text()
            return job_id, status, failed.value, next_id, final, left_after_kill, _leftovers(mixes), log

    job_id, status, failed, next_id, final, left_after_kill, left_now, log = run(main(), 400)
    assert status.job_id == job_id and status.job_state is p.JobState.FAILED
    assert status.error is p.ErrorCode.INTERRUPTED and failed.code is p.ErrorCode.INTERRUPTED
    assert next_id > job_id  # ids never repeat across the crash
    assert final.job_state is p.JobState.DONE
    assert left_now == []  # the killed job's temporary files are gone
    assert f"job {job_id}" in log and "interrupted" in log
    _no_tracebacks(log)
    del left_after_kill  # what the kill left depends on the stage; all of it is gone now


def test_damaged_state_files_are_moved_aside_and_the_box_starts(tmp_path):
    async def main():
        async with Life(tmp_path, pairable=True) as life:
            await life.paired()
        box = tmp_path / "box"
        (box / "bonds.json").write_text('{"F0:16:16:16:16:01/P": {"C0:16:')  # cut off by a power cut
        (box / "identity.json").write_text('{"address": "F0:16:16:16:16:01", "irk": ')
        shutil.rmtree(box / "library")
        (box / "library").write_text("not a folder")
        async with Life(tmp_path, pairable=True) as life:
            client = life.client
            await client.connect()
            if not client.bonded:  # the bond store was lost: pair again (window open)
                await client.pair()
            status = await client.read_status()
            info = await client.read_info()
            return status, info, life.log_text(), sorted(e.name for e in box.iterdir())

    status, info, log, names = run(main())
    assert info.version == p.PROTOCOL_VERSION  # the box came up, at its old address (BOX above)
    assert status.error is p.ErrorCode.INTERNAL and ("damaged" in status.stage or "was a file" in status.stage)
    assert any(n.startswith("bonds.json.damaged-") for n in names)
    assert any(n.startswith("identity.json.damaged-") for n in names)
    assert any(n.startswith("library.damaged-") for n in names)
    assert "bonds.json was damaged" in log and "recovered address F0:16:16:16:16:01" in log
    _no_tracebacks(log)


def test_identity_without_an_address_is_refused_not_regenerated(tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    (box / "identity.json").write_bytes(b"\x00" * 40)
    proc = subprocess.run([sys.executable, "-m", "melisma.device.service", "run", "--transport", "tcp-client:127.0.0.1:9",
                           "--data-dir", str(box)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 10
    assert "identity.json is damaged" in proc.stderr and "will not make a new address" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (box / "identity.json").read_bytes() == b"\x00" * 40  # left exactly as it was


def test_unbonded_flood_is_logged_in_bounded_lines_and_dropped(tmp_path):
    async def main():
        async with Life(tmp_path) as life:
            client = life.client
            await client.connect()
            assert not client.bonded
            before = len(life.log_text())
            writes = 0
            data = p.Data(1, 0, b"x" * 200).encode()
            cancel = p.CancelCommand(1, 1).encode()
            bleak = client.client
            for i in range(1000):
                try:
                    if i % 2:
                        await bleak.write_gatt_char(p.TRANSFER_DATA_CHAR_UUID, data, response=False)
                    else:
                        await bleak.write_gatt_char(p.COMMAND_CHAR_UUID, cancel, response=True)
                except BleakGATTProtocolError as exc:
                    assert exc.code in (0x05, 0x0F)  # refused: not bonded
                except (BleakError, asyncio.CancelledError):  # the box dropped this connection
                    break
                writes += 1
            await asyncio.sleep(0.5)
            growth = len(life.log_text()) - before
            # the box still answers: a new connection reads its device information
            with contextlib.suppress(Exception):
                await client.disconnect()
            await client.connect()
            alive = client.box_version
            return writes, growth, life.log_text(), alive

    writes, growth, log, alive = run(main())
    assert alive == p.PROTOCOL_VERSION
    assert writes < 1000  # the flooding connection was dropped before it finished
    assert "dropping" in log
    assert growth < 4000, log[-4000:]  # a handful of lines, not a traceback per write
    _no_tracebacks(log)


@needs_tmpfs
def test_disk_full_mid_upload_fails_once_keeps_the_partial_and_resumes(tmp_path):
    data = os.urandom(300_000)
    src = tmp_path / "take.m4a"
    src.write_bytes(data)

    async def main():
        async with Life(tmp_path, pairable=True, tmpfs_kib=768) as life:
            client = await life.paired()
            filled = []

            def progress(done, total):
                if not filled and done > total // 3:
                    # another writer takes the rest of the card meanwhile
                    filler = life.inside("library/backings/filler.wav")
                    with contextlib.suppress(OSError), open(filler, "wb") as f:
                        while True:
                            f.write(b"\0" * 4096)
                            f.flush()
                    filled.append(filler.stat().st_size)

            with pytest.raises(BoxError) as full:
                await client.upload(src, "take", progress=progress)
            partials = [pp for pp in life.inside("library/partial").iterdir() if pp.suffix == ".part"]
            held = partials[0].stat().st_size
            await client.delete("backing", "filler.wav")  # the user frees space from the app
            entry = await client.upload(src, "take")
            stored = life.inside("library/takes/take.m4a").read_bytes()
            return full.value, held, client.last_resume_offset, entry, stored, life.log_text()

    full, held, resumed_from, entry, stored, log = run(main())
    assert full.code is p.ErrorCode.NO_SPACE and "no room" in str(full)
    assert held > 0 and held == resumed_from  # truncated to the last good chunk, resumed from there
    assert stored == data and entry.sha256 == hashlib.sha256(data).digest()
    assert log.count("upload of take.m4a stopped") == 1  # failed once, not once per chunk
    _no_tracebacks(log)


@needs_tmpfs
def test_disk_full_mid_job_fails_no_space_and_leaves_nothing(tmp_path):
    take, backing = _audio(tmp_path, 1.0)

    async def main():
        async with Life(tmp_path, pairable=True, tmpfs_kib=2048) as life:
            client = await life.paired()
            await client.upload(take, "take")
            await client.upload(backing, "backing")
            filler = life.inside("library/backings/filler.wav")
            with contextlib.suppress(OSError), open(filler, "wb") as f:
                f.write(b"\0" * (2048 * 1024 - 3 * (take.stat().st_size + backing.stat().st_size)))
            job_id = await client.start_mix("take.wav", "backing.wav", "mix.wav")
            with pytest.raises(BoxError) as failed:
                await client.wait_for_job(job_id, timeout_s=180)
            mixes = _leftovers(life.inside("library/mixes"))
            listing = [e.name for e in await client.list_library("mix")]
            return failed.value, mixes, listing, life.log_text()

    failed, leftovers, listing, log = run(main(), 400)
    assert failed.code is p.ErrorCode.NO_SPACE
    assert leftovers == [] and listing == []  # no half mix, nothing left behind
    _no_tracebacks(log)


def _device_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "melisma.device.service", *args], capture_output=True, text=True,
                          timeout=60)


def test_an_interrupted_job_is_rerun_over_ble_under_a_new_id_and_makes_its_mix(tmp_path):
    """Protocol 1.1 Rerun: SIGKILL mid-mix, restart, the phone asks the box to re-run the interrupted job."""
    take, backing = _audio(tmp_path, 2.0)

    async def main():
        async with Life(tmp_path, pairable=True) as life:
            client = await life.paired()
            await client.upload(take, "take")
            await client.upload(backing, "backing")
            done_id = await client.start_mix("take.wav", "backing.wav", "first.wav")
            await client.wait_for_job(done_id, timeout_s=180)
            seen = asyncio.Event()

            def on_status(status):
                if status.job_state is p.JobState.RUNNING and status.progress >= 0.1 and not seen.is_set():
                    seen.set()
                    life.kill()

            client.status_listeners.append(on_status)
            job_id = await client.start_mix("take.wav", "backing.wav", "mix.wav")
            await asyncio.wait_for(seen.wait(), 120)
        assert not (tmp_path / "box" / "library" / "mixes" / "mix.wav").exists()
        async with Life(tmp_path) as life:
            client = await life.paired()
            status = await client.read_status()
            refused = {}
            for what, bad in (("unknown", 60000), ("done", done_id)):
                with pytest.raises(BoxError) as exc:
                    await client.rerun(bad)
                refused[what] = exc.value
            new_id = await client.rerun(job_id)
            with pytest.raises(BoxError) as twice:
                await client.rerun(job_id)
            refused["twice"] = twice.value
            final = await client.wait_for_job(new_id, timeout_s=180)
            listing = {e.name: e for e in await client.list_library("mix")}
            got = await client.download("mix", "mix.wav", tmp_path / "phone" / "mix.wav")
            # the same refusals from the box's own command line (through its control socket)
            again = _device_cli("rerun", str(job_id), "--data-dir", str(life.data_dir))
            unknown = _device_cli("rerun", "60000", "--data-dir", str(life.data_dir))
            return (job_id, done_id, status, refused, new_id, final, listing, got, again, unknown, life.log_text())

    job_id, done_id, status, refused, new_id, final, listing, got, again, unknown, log = run(main(), 500)
    assert status.job_id == job_id and status.error is p.ErrorCode.INTERRUPTED
    assert refused["unknown"].code is p.ErrorCode.NOT_FOUND and "no job 60000" in str(refused["unknown"])
    assert refused["done"].code is p.ErrorCode.BAD_STATE and f"job {done_id} finished" in str(refused["done"])
    assert refused["twice"].code is p.ErrorCode.BAD_STATE and "already queued again" in str(refused["twice"])
    assert new_id > job_id > done_id  # a NEW id, never one seen before
    assert final.job_id == new_id and final.job_state is p.JobState.DONE
    assert "mix.wav" in listing and listing["mix.wav"].sha256 == hashlib.sha256(got.read_bytes()).digest()
    y, sr = audio_io.load_audio(got)
    assert sr == SR and y.shape[-1] > SR  # a real two-second mix, not an empty file
    assert again.returncode == 10 and f"already queued again as job {new_id}" in again.stderr
    assert unknown.returncode == 10 and "no job 60000" in unknown.stderr
    for proc in (again, unknown):
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"job {job_id} (interrupted) queued again as job {new_id}" in log
    _no_tracebacks(log)


def test_losing_the_radio_mid_job_stops_the_box_with_one_line_and_the_job_runs_after_restart(tmp_path):
    """The HCI transport goes away (controller unplugged: here its TCP peer, the virtual controller, dies)."""
    take, backing = _audio(tmp_path, 2.0)

    async def main():
        async with Life(tmp_path, pairable=True) as life:
            client = await life.paired()
            await client.upload(take, "take")
            await client.upload(backing, "backing")
            running = asyncio.Event()
            client.status_listeners.append(
                lambda s: running.set() if s.job_state is p.JobState.RUNNING and s.progress > 0.05 else None)
            job_id = await client.start_mix("take.wav", "backing.wav", "mix.wav")
            await asyncio.wait_for(running.wait(), 120)
            radio = life.procs[0]  # bumble.apps.controllers: the box's (and the phone's) controller
            radio.kill()
            radio.wait(10)
            t0 = time.monotonic()
            rc = await asyncio.to_thread(life.box.wait, 60)
            stopped_s = time.monotonic() - t0
            stderr = life.log_text()
        async with Life(tmp_path) as life:  # systemd starts it again, with a radio
            client = await life.paired()
            final = await client.wait_for_job(job_id, timeout_s=180)
            return job_id, rc, stopped_s, stderr, final, life.log_text()

    job_id, rc, stopped_s, stderr, final, log = run(main(), 500)
    assert rc == 14, stderr[-3000:]
    assert stopped_s < 30  # it stopped by itself, not waiting for HCI commands that never return
    ours = [line for line in stderr.splitlines() if line.startswith("melisma-device:")]
    assert len(ours) == 1 and "lost the radio transport" in ours[0] and "tcp-client:127.0.0.1:" in ours[0]
    _no_tracebacks(stderr)
    assert final.job_id == job_id and final.job_state is p.JobState.DONE  # journaled, nothing lost
    _no_tracebacks(log)


def test_rerun_without_a_running_box_is_one_line(tmp_path):
    proc = _device_cli("rerun", "5", "--data-dir", str(tmp_path))
    assert proc.returncode == 10 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no running melisma-device service" in proc.stderr
    assert "Traceback" not in proc.stderr
