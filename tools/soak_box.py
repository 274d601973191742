"""Soak the box: hundreds of jobs through a real ``melisma-device`` process; does it leak?

Starts Bumble's virtual controllers (``bumble.apps.controllers``, TCP on 127.0.0.1), the box
(``python -m melisma.device.service run``) on one, and the real companion client here on the
other, then repeats a cycle until ``--jobs`` jobs have run: upload a take and a backing, mix,
analyze, preview, download the mix, delete everything the cycle made. It prints the box
process's resident memory (VmRSS from /proc) after the first cycle (engine imported, caches warm)
and at the end, and the bytes under the box's library folder at the start and after the last
delete. Issue 16's bar: RSS growth at most 10 MB, storage back to its starting size.

Usage::

    python tools/soak_box.py --jobs 200 --seconds 1.0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "companion"))  # a tool script, not library code

import numpy as np  # noqa: E402
from bumble.transport import open_transport  # noqa: E402
from melisma import audio_io  # noqa: E402
from melisma_companion.bumble_backend import BumbleCentral  # noqa: E402
from melisma_companion.client import MelismaClient  # noqa: E402

BOX = "F0:50:A4:00:00:01"
PHONE = "C0:50:A4:00:00:02"
SR = 48000


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int) -> None:
    for _ in range(400):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(port)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_bytes(root: Path) -> int:
    """Bytes of every file under ``root`` (hidden and partial files included)."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def make_inputs(folder: Path, seconds: float) -> tuple[Path, Path]:
    t = np.arange(int(seconds * SR)) / SR
    f0 = 220 * 2 ** (0.3 * np.sin(2 * np.pi * 5.5 * t) / 12)
    take = (0.2 * np.sin(2 * np.pi * np.cumsum(f0) / SR) * np.minimum(1, t * 4)).astype(np.float32)
    backing = np.stack([0.1 * np.sin(2 * np.pi * 110 * t), 0.1 * np.sin(2 * np.pi * 165 * t)])
    backing = (backing + 0.01 * np.random.default_rng(1).standard_normal(backing.shape)).astype(np.float32)
    lag = int(0.120 * SR)  # recorded with the phone speaker on: the backing bleeds in 120 ms late
    take[lag:] += 0.5 * backing.mean(axis=0)[:-lag]
    audio_io.write_audio(folder / "take.wav", take, sr=SR)
    audio_io.write_audio(folder / "backing.wav", backing, sr=SR)
    return folder / "take.wav", folder / "backing.wav"


async def soak(jobs: int, seconds: float, tmp: Path) -> dict:
    p1, p2 = _port(), _port()
    procs = [subprocess.Popen([sys.executable, "-m", "bumble.apps.controllers", f"tcp-server:127.0.0.1:{p1}",
                               f"tcp-server:127.0.0.1:{p2}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    data_dir = tmp / "box"
    log = open(tmp / "box.log", "w")  # noqa: SIM115 -- the box writes to it until the end
    try:
        _wait_port(p1)
        _wait_port(p2)
        box = subprocess.Popen([sys.executable, "-m", "melisma.device.service", "run", "--transport",
                                f"tcp-client:127.0.0.1:{p1}", "--address", BOX, "--data-dir", str(data_dir),
                                "--pairable"], stdout=subprocess.PIPE, stderr=log, text=True)
        procs.append(box)
        line = await asyncio.to_thread(box.stdout.readline)
        assert "ready" in line, line
        transport = await open_transport(f"tcp-client:127.0.0.1:{p2}")
        central = BumbleCentral.with_hci(transport.source, transport.sink, PHONE)
        client = MelismaClient(BOX, backend=central.client_backend, request_timeout_s=60)
        await client.connect()
        await client.pair()
        take, backing = make_inputs(tmp, seconds)
        library = data_dir / "library"
        start_bytes = tree_bytes(library)
        done = cycles = 0
        warm_rss = None
        t0 = time.perf_counter()
        while done < jobs:
            i = cycles
            await client.upload(take, "take", f"take-{i}.wav")
            await client.upload(backing, "backing", f"backing-{i}.wav")
            await client.wait_for_job(await client.start_mix(f"take-{i}.wav", f"backing-{i}.wav", f"mix-{i}.wav"),
                                      timeout_s=300)
            done += 1
            if done < jobs:
                await client.wait_for_job(await client.analyze(f"take-{i}.wav", f"backing-{i}.wav", f"plan-{i}.json"),
                                          timeout_s=300)
                done += 1
            if done < jobs and (library / "plans" / f"plan-{i}.json").exists():
                await client.wait_for_job(await client.preview(f"plan-{i}.json", f"prev-{i}.wav", start_s=0.0,
                                                               duration_s=min(seconds, 10.0)), timeout_s=300)
                done += 1
            await client.download("mix", f"mix-{i}.wav", tmp / "mix.wav")
            for kind, name in (("mix", f"mix-{i}.wav"), ("preview", f"prev-{i}.wav"), ("plan", f"plan-{i}.json"),
                               ("take", f"take-{i}.wav"), ("backing", f"backing-{i}.wav")):
                with contextlib.suppress(Exception):
                    await client.delete(kind, name)
            cycles += 1
            if warm_rss is None:
                warm_rss = rss_kib(box.pid)
            if cycles % 10 == 0:
                print(f"  {done} jobs, RSS {rss_kib(box.pid) / 1024:.1f} MiB, {time.perf_counter() - t0:.0f} s",
                      flush=True)
        end_rss = rss_kib(box.pid)
        end_bytes = tree_bytes(library)
        leftovers = sorted(str(p.relative_to(library)) for p in library.rglob("*") if p.is_file())
        await client.disconnect()
        await transport.close()
        return {"jobs": done, "cycles": cycles, "seconds": time.perf_counter() - t0, "warm_rss_kib": warm_rss,
                "end_rss_kib": end_rss, "start_bytes": start_bytes, "end_bytes": end_bytes, "leftovers": leftovers,
                "tracebacks": (tmp / "box.log").read_text().count("Traceback")}
    finally:
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        log.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=200, help="jobs to run (mix, analyze, preview per cycle)")
    ap.add_argument("--seconds", type=float, default=1.0, help="length of the generated take and backing")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(soak(args.jobs, args.seconds, Path(tmp)))
    growth = (r["end_rss_kib"] - r["warm_rss_kib"]) / 1024
    print(f"{r['jobs']} jobs in {r['cycles']} cycles ({r['seconds']:.0f} s) on a real melisma-device process")
    print(f"  box RSS after the first cycle {r['warm_rss_kib'] / 1024:.1f} MiB, at the end {r['end_rss_kib'] / 1024:.1f} MiB: "
          f"growth {growth:+.1f} MiB (bar: <= 10)")
    print(f"  library {r['start_bytes']} bytes at the start, {r['end_bytes']} after the deletes "
          f"({'back to its starting size' if r['end_bytes'] == r['start_bytes'] else 'NOT back'}); "
          f"files left: {r['leftovers'] or 'none'}")
    print(f"  tracebacks in the box's log: {r['tracebacks']}")
    return 0 if growth <= 10 and r["end_bytes"] == r["start_bytes"] and not r["tracebacks"] else 1


if __name__ == "__main__":
    sys.exit(main())
