"""Benchmark: slider released -> preview playing, broken into its parts, over a Bumble virtual link; and the
figure to expect on a real phone link.

Runs the real box (demo box code: Bumble GATT peripheral, job queue, the engine) and the app's controller
(the same code the Kivy screens call) in one process, mixes the bundled example once, then releases a
slider ``--rounds`` times and times each preview:

* controls  - writing the sliders to the box (one write with response);
* render    - the preview command, the render on the box, its status notification;
* transfer  - downloading the preview (Opus in Ogg) through the chunked, acknowledged transfer;
* start     - loading (decoding) the file in Kivy's SoundLoader (SDL_mixer here) and starting it.

The virtual link has no radio; the real-link estimate replaces the transfer by the protocol's cost on the
phone link rates tools/bench_ble.py uses (chunk headers, one acknowledgement per window), adds two
connection intervals per request round trip (controls, command, status), and keeps the render and start
times measured here (a Raspberry Pi 4 renders slower than this machine: see the note printed).

Usage::

    python tools/bench_preview.py --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "companion"))  # a tool script, not library code
sys.path.insert(0, str(ROOT / "tools"))

os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # SDL's real mixer path; no sound card needed

from bench_ble import PHONE_LINKS, expected_seconds  # noqa: E402
from melisma_companion.app import controller as ctl  # noqa: E402
from melisma_companion.app.main import prepare_kivy, start_demo  # noqa: E402
from melisma_companion.app.state import AppState  # noqa: E402

TARGET_S = 1.5
#: Request round trips in a preview: controls write, preview command + reply, job status, download begin.
ROUND_TRIPS = 4


async def bench(rounds: int) -> list[dict[str, float]]:
    from melisma_companion.app.ui import KivyPlayer

    with tempfile.TemporaryDirectory() as tmp:
        state = AppState()
        demo, link, _ = await start_demo(state, Path(tmp), passkey=False)
        companion = ctl.Companion(state, link, Path(tmp) / "app", player=KivyPlayer(), scan_timeout_s=1.0)
        try:
            boxes = await companion.scan()
            await companion.connect(boxes[0].device, companion.name_of(boxes[0]))
            await companion.pair()
            companion.tap_mix()
            while not state.job.done:
                await asyncio.sleep(0.1)
                if not state.job.running and not state.job.done:
                    raise SystemExit(f"the mix failed: {state.job.message}")
            out = []
            for i in range(rounds):
                companion.set_playhead(3.0 + 4 * i)
                companion.slider_moved("reverb", (-1) ** i * 0.4)
                out.append(await companion.preview())
            return out
        finally:
            await companion.close()
            await demo.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="previews to time (default: %(default)s)")
    args = ap.parse_args(argv)
    prepare_kivy()
    runs = asyncio.run(bench(args.rounds))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    size = med["bytes"]
    print(f"preview: {ctl.PREVIEW_S:.1f} s of Opus in Ogg (the box encodes previews at 48 kbit/s), "
          f"median {size / 1000:.1f} kB; median of {len(runs)} slider releases over the virtual link "
          "(Bumble LocalLink, one process):")
    for key, label in (("controls_s", "write sliders"), ("render_s", "render on the box (command to done)"),
                       ("transfer_s", "transfer (download)"), ("start_s", "decode + start playing"),
                       ("total_s", "slider release -> playing")):
        print(f"  {label:38s} {1000 * med[key]:7.0f} ms")
    print(f"\nexpected on a real phone link (render and start as measured here; transfer and {ROUND_TRIPS} "
          "request round trips from the link's rate and connection interval):")
    for label, rate, interval, mtu in PHONE_LINKS:
        transfer = expected_seconds(int(size), rate, interval, mtu)
        total = med["render_s"] + med["start_s"] + transfer + ROUND_TRIPS * 2 * interval
        verdict = "within" if total <= TARGET_S else "over"
        print(f"  {label:48s} transfer {1000 * transfer:5.0f} ms, total {1000 * total:5.0f} ms "
              f"({verdict} the {TARGET_S:.1f} s target)")
    print("\nnote: the render time is this machine's; a Raspberry Pi 4 is several times slower per core "
          "(not measured here), so budget the render part accordingly.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
