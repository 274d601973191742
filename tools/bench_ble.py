"""Benchmark the Melisma BLE link over a Bumble virtual link, and estimate real phone transfer times.

Runs the real box (Bumble GATT server) and the real companion client (bleak on the Bumble
backend) in one process, and prints, for one ATT MTU:

* upload throughput (kB/s) of a file through the chunked, windowed, checksummed transfer;
* control round-trip time (write the controls with response; read the status);
* the expected time to move a 3-minute AAC take at typical phone link rates.

The virtual link has no radio: its throughput is bounded by Python (both stacks on one core), so
it measures protocol and CPU cost, not air time. The phone estimates use the protocol's own
overheads (13 bytes per chunk, one acknowledgement round trip per window) on assumed link rates.

Usage::

    python tools/bench_ble.py --mtu 247 --size-kb 512
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "companion"))  # a tool script, not library code

from bumble.link import LocalLink  # noqa: E402
from melisma import protocol as p  # noqa: E402
from melisma.device.ble_server import MelismaBox, local_link_hci  # noqa: E402
from melisma_companion.bumble_backend import BumbleCentral  # noqa: E402
from melisma_companion.client import MelismaClient  # noqa: E402

BOX = "F0:BE:4C:00:00:01"

#: Assumed raw application throughput of phone links (bytes/s of ATT payload, write without
#: response), from typical connection intervals and packets per event; see firmware/docs/protocol.md.
PHONE_LINKS = [
    ("BLE 4.2 no DLE, 30 ms interval (older phones)", 10_000, 30e-3, 185),
    ("iPhone, DLE, 15-30 ms interval, MTU 185", 40_000, 30e-3, 185),
    ("Android, DLE, 7.5-15 ms interval, MTU 247", 80_000, 15e-3, 247),
    ("Android, 2M PHY, DLE, 7.5 ms, MTU 517", 160_000, 7.5e-3, 517),
]
AAC_TAKE_BYTES = int(180 * 128_000 / 8)  # 3 minutes at 128 kbit/s (a phone's usual AAC rate)


def protocol_efficiency(mtu: int, window: int = p.DEFAULT_WINDOW_CHUNKS) -> float:
    """Fraction of raw ATT throughput that is file data: chunk headers and per-window ack stalls."""
    chunk = p.chunk_payload_size(mtu)
    return chunk / (chunk + p.DATA_HEADER_SIZE + 3)


def expected_seconds(size: int, rate_bps: float, interval_s: float, mtu: int,
                     window: int = p.DEFAULT_WINDOW_CHUNKS) -> float:
    chunk = p.chunk_payload_size(mtu)
    windows = size / (chunk * window)
    return size / (rate_bps * protocol_efficiency(mtu)) + windows * 2 * interval_s  # ack: ~2 intervals


async def bench(mtu: int, size: int, rounds: int) -> dict:
    link = LocalLink()
    with tempfile.TemporaryDirectory() as tmp:
        src, sink = local_link_hci(link, BOX)
        box = MelismaBox(src, sink, data_dir=Path(tmp) / "box", address=BOX, engine=object())
        await box.start()
        central = BumbleCentral.on_local_link(link, "C0:BE:4C:00:00:02")
        backend = type("BenchClient", (central.client_backend,), {"requested_mtu": mtu})
        client = MelismaClient(BOX, backend=backend)
        await client.connect()
        box.pairing_window.open(30)
        await client.pair()
        negotiated = client.client.mtu_size
        payload = Path(tmp) / "take.m4a"
        payload.write_bytes(bytes(range(256)) * (size // 256))
        t0 = time.perf_counter()
        await client.upload(payload, "take")
        upload_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await client.download("take", "take.m4a", Path(tmp) / "back.m4a")
        download_s = time.perf_counter() - t0
        writes, reads = [], []
        for i in range(rounds):
            t0 = time.perf_counter()
            await client.set_controls(style="cpop", warmth=(i % 200 - 100) / 100)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await client.read_status()
            reads.append(time.perf_counter() - t0)
        await client.disconnect()
        await box.stop()
    return {"mtu": negotiated, "size": size,
            "upload_kBps": size / upload_s / 1000, "download_kBps": size / download_s / 1000,
            "control_write_ms": statistics.median(writes) * 1000, "status_read_ms": statistics.median(reads) * 1000}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mtu", type=int, default=247, help="ATT MTU the central asks for (64..517)")
    ap.add_argument("--size-kb", type=int, default=256, help="upload size in kB")
    ap.add_argument("--rounds", type=int, default=50, help="control round trips to time")
    args = ap.parse_args(argv)
    if not p.MIN_ATT_MTU <= args.mtu <= 517:
        ap.error(f"--mtu {args.mtu} is out of range; use {p.MIN_ATT_MTU}..517")
    r = asyncio.run(bench(args.mtu, args.size_kb * 1000, args.rounds))
    print(f"virtual link (Bumble LocalLink, both stacks in one Python process), ATT MTU {r['mtu']}, "
          f"chunk {p.chunk_payload_size(r['mtu'])} B, window {p.DEFAULT_WINDOW_CHUNKS} chunks")
    print(f"  upload    {r['upload_kBps']:8.1f} kB/s   ({args.size_kb} kB)")
    print(f"  download  {r['download_kBps']:8.1f} kB/s")
    print(f"  control write round trip (median of {args.rounds}) {r['control_write_ms']:.2f} ms; "
          f"status read {r['status_read_ms']:.2f} ms")
    print(f"\nexpected upload time of a 3-minute AAC take ({AAC_TAKE_BYTES / 1e6:.2f} MB at 128 kbit/s):")
    for label, rate, interval, mtu in PHONE_LINKS:
        secs = expected_seconds(AAC_TAKE_BYTES, rate, interval, mtu)
        print(f"  {label:48s} ~{rate / 1000:5.0f} kB/s raw -> {secs:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
