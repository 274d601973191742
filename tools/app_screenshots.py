"""Take a screenshot of every screen of the companion app from a real Kivy window, into companion/docs/screens/.

Runs ``melisma-app --demo``'s wiring (the real box code on a Bumble virtual link, the bundled example take
and backing) on a virtual X server (Xvfb, started here when there is no ``$DISPLAY``), walks through the
flow (scan, pair with the passkey the demo box shows, mix, a slider with its preview, the result,
download) and writes one PNG per screen.

Usage::

    python tools/app_screenshots.py [--out companion/docs/screens]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "companion"))  # a tool script, not library code


def start_xvfb() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    exe = shutil.which("Xvfb")
    if exe is None:
        raise SystemExit("no $DISPLAY and no Xvfb: install xvfb (tools/run installs it with the test packages)")
    for n in range(120, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists():
            break
    proc = subprocess.Popen([exe, f":{n}", "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        time.sleep(0.05)
    os.environ["DISPLAY"] = f":{n}"
    return proc


async def until(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def shoot(out: Path) -> list[Path]:
    from melisma_companion.app.controller import Companion
    from melisma_companion.app.main import start_demo
    from melisma_companion.app.state import AppState
    from melisma_companion.app.ui import MelismaApp

    written: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        state = AppState()
        demo, link, start_dir = await start_demo(state, Path(tmp), passkey=True)
        companion = Companion(state, link, Path(tmp) / "app", scan_timeout_s=1.5)
        app = MelismaApp(companion, demo=demo, start_dir=start_dir, save_dir=Path(tmp))
        task = asyncio.ensure_future(app.async_run(async_lib="asyncio"))

        async def snap(name: str, screen: str) -> None:
            app.root.ids.sm.current = screen
            await asyncio.sleep(0.4)
            written.append(app.screenshot(out / f"{len(written) + 1:02d}-{name}.png"))
            print(written[-1])

        try:
            await until(lambda: state.link.boxes, "the scan")
            await snap("find", "find")
            await companion.connect(state.link.boxes[0].device, companion.name_of(state.link.boxes[0]))
            pairing = companion.spawn(companion.pair(), "pairing")
            await until(lambda: state.link.passkey_wanted, "the passkey prompt")
            await snap("pair-passkey", "pair")
            companion.submit_passkey(f"{demo.last_passkey:06d}")
            await pairing
            await until(lambda: state.library.take and state.library.backing, "the library")
            await snap("library", "library")
            companion.tap_style(1)
            companion.tap_mix()
            await until(lambda: state.job.step == "analyze" and state.job.progress > 0.2, "the mix running")
            await snap("mix-running", "mix")
            await until(lambda: state.job.done, "the mix", timeout=300)
            await until(lambda: state.result.plan is not None, "the plan")
            await snap("result", "result")
            companion.set_playhead(6.0)
            companion.slider_released("reverb", 0.5)
            companion.slider_moved("warmth", -0.3)
            await until(lambda: state.shape.preview == "playing", "the preview")
            await snap("shape-preview", "shape")
            companion.tap_download()
            await until(lambda: state.keep.local_path, "the download")
            await snap("keep", "keep")
            await companion.refresh_library()  # the box's files after the mix: the plan with its render report
            await until(lambda: any(e.name.endswith(".report.json") for e in state.library.entries), "the render report")
            await snap("library-after-mix", "library")
        finally:
            app.stop()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 20)
            await companion.close()
            await demo.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "companion" / "docs" / "screens")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    xvfb = start_xvfb()
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        from melisma_companion.app.main import configure_logging, prepare_kivy

        configure_logging()
        prepare_kivy()
        asyncio.run(shoot(args.out))
    finally:
        if xvfb is not None:
            xvfb.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
