"""``melisma-app``: the companion app.

Usage::

    melisma-app                      # the phone's / PC's Bluetooth (bleak: BlueZ on Linux)
    melisma-app --demo               # a box in this process on a virtual link, examples loaded, pairing open
    melisma-app --demo --just-works  # the demo box without a display (Just Works pairing)
    melisma-app --transport usb:0    # a USB Bluetooth dongle driven by Bumble

Each step is logged at INFO on standard error (found, connected, paired, uploaded, job progress,
downloaded). Kivy, bleak and Bumble share one asyncio loop (``App.async_run``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from melisma.errors import MelismaError

logger = logging.getLogger("melisma_companion.app")

DEFAULT_DATA_DIR = Path(os.environ.get("MELISMA_APP_DIR", str(Path.home() / ".local" / "share" / "melisma-app")))


def prepare_kivy(*, width: int = 480, height: int = 860) -> None:
    """Settings Kivy reads when it is first imported: Python logging, no argv parsing, a phone-shaped window."""
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    os.environ.setdefault("KIVY_NO_ARGS", "1")
    os.environ.setdefault("KIVY_NO_FILELOG", "1")
    from kivy.config import Config

    Config.set("graphics", "width", str(width))
    Config.set("graphics", "height", str(height))
    Config.set("input", "mouse", "mouse,disable_multitouch")
    Config.set("kivy", "exit_on_escape", "0")
    Config.set("kivy", "log_level", "warning")


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kivy", "bumble", "bleak", "melisma.device", "melisma.models_runtime"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level > logging.DEBUG else level)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="melisma-app", description="Melisma companion app (Kivy).")
    ap.add_argument("--demo", action="store_true",
                    help="run a box in this process on a Bumble virtual link, with the bundled example take and "
                         "backing, in its pairing window")
    ap.add_argument("--just-works", action="store_true", help="with --demo: a box without a display (no passkey)")
    ap.add_argument("--transport", default=None,
                    help="drive a Bluetooth controller with Bumble instead of the OS stack, e.g. usb:0")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                    help="the app's settings, bonds and downloads (default: %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")
    return ap


async def run_app(app: Any) -> None:
    """Run the Kivy app on the current asyncio loop, then close the companion's link."""
    try:
        await app.async_run(async_lib="asyncio")
    finally:
        await app.companion.close()
        if getattr(app, "demo", None) is not None:
            await app.demo.stop()


async def start_demo(state: Any, data_dir: Path, *, passkey: bool = True, preload: bool = True,
                     examples: tuple[Path, Path] | None = None) -> tuple[Any, Any, Path]:
    """The demo's box (real device code on a virtual link) and the app's central on the same link."""
    from bumble.link import LocalLink

    from .demo import DEMO_PHONE_ADDRESS, DemoBox
    from .links import BumbleLink

    bus = LocalLink()
    demo = DemoBox(bus, data_dir / "demo-box", passkey=passkey, preload=preload, examples=examples,
                   on_display=lambda text: state.link.update(demo_display=text))
    await demo.start()
    link = BumbleLink.on_local_link(bus, DEMO_PHONE_ADDRESS, keystore_path=data_dir / "demo-bonds.json")
    logger.info("demo: %s runs in this process on a virtual link, pairing window open", demo.box.name)
    return demo, link, demo.example_dir


async def _main(args: argparse.Namespace) -> None:
    from .controller import Companion
    from .links import BumbleLink, SystemLink
    from .state import AppState
    from .ui import MelismaApp

    data_dir: Path = args.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    state = AppState()
    demo: Any = None
    start_dir = Path.home()
    permissions_api = None
    if args.demo:
        demo, link, start_dir = await start_demo(state, data_dir, passkey=not args.just_works)
    elif args.transport:
        link = await BumbleLink.open(args.transport, "C0:4D:45:4C:00:01", keystore_path=data_dir / "bonds.json")
    else:
        from .permissions import android_api

        link = SystemLink()
        permissions_api = android_api()
    companion = Companion(state, link, data_dir / ("demo" if args.demo else "app"))
    app = MelismaApp(companion, demo=demo, start_dir=start_dir, save_dir=Path.home(), permissions_api=permissions_api)
    await run_app(app)
    await link.close()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    prepare_kivy()
    try:
        asyncio.run(_main(args))
    except MelismaError as exc:
        print(f"melisma-app: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
