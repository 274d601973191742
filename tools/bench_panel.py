#!/usr/bin/env python3
"""Front panel latencies over tools/panel-sim (the real firmware on the MicroPython unix port).

    .venv/bin/python tools/bench_panel.py [--rounds N]

Prints: time from starting the simulator to the box and panel knowing each other; box -> panel
display latency (a controls change on the box until the OLED line shows it); panel -> box latency
(a simulated button release until the box has acted); and the panel core's CRC cost per line on
MicroPython. The unix port on a PC is much faster than a Pico's RP2040, so the last figure is a
floor, not the Pico's number.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bumble.link import LocalLink
from melisma import protocol as p
from melisma.device.ble_server import MelismaBox, local_link_hci
from melisma.device.panel_bridge import PanelBridge, PanelSettings

ROOT = Path(__file__).resolve().parents[1]


async def bench(rounds: int) -> dict[str, list[float]]:
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "tools" / "panel-sim"),
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    path = (await proc.stdout.readline()).decode().split()[1]
    lines: list[tuple[float, str]] = []

    async def read():
        while raw := await proc.stdout.readline():
            lines.append((time.monotonic(), raw.decode().rstrip()))

    reader = asyncio.get_running_loop().create_task(read())

    async def wait_for(text: str, since: int) -> float:
        while True:
            for t, line in lines[since:]:
                if text in line:
                    return t
            await asyncio.sleep(0.002)

    with tempfile.TemporaryDirectory() as tmp:
        src, sink = local_link_hci(LocalLink(), "F0:00:00:00:00:BE")
        box = MelismaBox(src, sink, data_dir=tmp, address="F0:00:00:00:00:BE", engine=object())
        await box.start()
        bridge = PanelBridge(PanelSettings(path=path))
        await bridge.start(box)
        out: dict[str, list[float]] = {"link_s": [await wait_for("LINK up", 0) - t0], "box_to_oled_ms": [],
                                       "release_to_box_ms": []}
        for i in range(rounds):
            value = ((i % 19) + 1) / 20
            mark = len(lines)
            t = time.monotonic()
            box.set_controls(p.Controls(box.controls.style, dict(box.controls.sliders, warmth=value)))
            await wait_for(f"+{value:.2f}", mark)
            out["box_to_oled_ms"].append((time.monotonic() - t) * 1000)
        for _ in range(max(3, rounds // 4)):
            style = box.controls.style
            mark = len(lines)
            proc.stdin.write(b"press mode\n")
            await proc.stdin.drain()
            released = await wait_for("OK press mode", mark)
            while box.controls.style == style:
                await asyncio.sleep(0.001)
            out["release_to_box_ms"].append((time.monotonic() - released) * 1000)
        proc.stdin.write(b"quit\n")
        await proc.stdin.drain()
        await proc.wait()
        await reader
        await bridge.stop()
        await box.stop()
    return out


def crc_cost_us(micropython: str) -> float:
    code = ("import time\nfrom mpanel.protocol import encode_line, decode_line\n"
            "line = encode_line(1234, 'ctl', ['cpop', 'warmth=25', 'reverb=-10', 'vocal_level=0', 'air=0', 'tuning=0',"
            " 'ornaments=0'])\nt = time.ticks_us()\nfor _ in range(2000):\n    decode_line(line)\n"
            "print(time.ticks_diff(time.ticks_us(), t) / 2000)\n")
    env = {"MICROPYPATH": f".frozen:{ROOT / 'firmware' / 'panel'}"}
    return float(subprocess.run([micropython, "-c", code], capture_output=True, text=True, env=env).stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    out = asyncio.run(bench(args.rounds))
    print(f"simulator start -> linked with the box: {out['link_s'][0]:.2f} s")
    for key, label in (("box_to_oled_ms", "box controls change -> OLED shows it"),
                       ("release_to_box_ms", "button released -> box acted (incl. 20 ms debounce)")):
        v = out[key]
        print(f"{label}: median {statistics.median(v):.0f} ms, max {max(v):.0f} ms ({len(v)} rounds)")
    micropython = str(Path(sys.executable).parent / "micropython")
    print(f"decode_line of a 90-byte ctl line on the MicroPython unix port: {crc_cost_us(micropython):.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
