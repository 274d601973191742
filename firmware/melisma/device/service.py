"""``melisma-device``: the box's long-running service (BLE peripheral + job queue + storage).

Usage::

    melisma-device run --transport hci-socket:0 --data-dir /var/lib/melisma   # on a Raspberry Pi
    melisma-device run --transport usb:0                                      # a USB dongle
    melisma-device run --transport tcp-client:127.0.0.1:9001 --pairable       # a virtual controller
    melisma-device pair --data-dir /var/lib/melisma    # open the pairing window (the button does this too)
    melisma-device audio list --json                   # the box's own audio (firmware/docs/audio.md)
    melisma-device run --panel /dev/ttyACM1            # with the front panel (or --panel auto: by USB id)
    melisma-device rerun 41 --data-dir /var/lib/melisma  # queue job 41 (interrupted by a crash) again

``run`` is the default command, so ``melisma-device --transport ...`` works too. The running
service listens on a Unix socket ``<data-dir>/control.sock``; ``pair`` (and the front-panel
bridge) send it one line (``pair [seconds]``) and print the answer; ``rerun JOB`` sends
``rerun JOB`` (the same as the BLE RerunCommand of protocol 1.1).

A radio transport lost while the service runs (the controller unplugged, its TCP peer gone) stops
the service with one line on stderr and exit status 14 (:class:`~melisma.errors.RadioLostError`);
jobs are journaled as for any shutdown, so systemd's restart picks them up again.

On a Raspberry Pi, take the HCI device away from BlueZ first (``sudo systemctl stop bluetooth``
and ``sudo hciconfig hci0 down``) so Bumble owns it; see firmware/docs/protocol.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from .. import protocol as p
from ..errors import DeviceError, MelismaError, RadioLostError

logger = logging.getLogger("melisma.device")

DEFAULT_DATA_DIR = os.environ.get("MELISMA_DATA_DIR", str(Path.home() / ".local" / "share" / "melisma"))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="melisma-device", description="Melisma box service: BLE peripheral and mix jobs.")
    sub = ap.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the service (default)")
    pair = sub.add_parser("pair", help="open the pairing window of the running service")
    rerun = sub.add_parser("rerun", help="queue a job interrupted by a crash or power cut again, under a new id")
    rerun.add_argument("job", type=int, help="the interrupted job's id (from the app, `status`, or the box's log)")
    for sp in (ap, run):
        sp.add_argument("--transport", default="hci-socket:0",
                        help="Bumble HCI transport: hci-socket:0 (Pi), usb:0, serial:/dev/ttyUSB0,1000000, "
                             "tcp-client:127.0.0.1:9001 (default: %(default)s)")
        sp.add_argument("--address", default=None,
                        help="static random address, e.g. F0:12:34:56:78:9A (default: made once and kept)")
        sp.add_argument("--passkey", choices=("none", "stdout"), default="none",
                        help="how the box shows a pairing passkey: none = Just Works inside the pairing window; "
                             "stdout = print it (a display or LEDs)")
        sp.add_argument("--pairable", action="store_true", help="open the pairing window at start")
        sp.add_argument("--config", default=None, metavar="PATH",
                        help="box.toml to read (e.g. /etc/melisma/box.toml); flags given here override it")
    for sp in (ap, run):
        sp.add_argument("--panel", default=None, metavar="PATH",
                        help="serial port of the front panel (e.g. /dev/ttyACM1, or the PTY of tools/panel-sim), "
                             "or 'auto' to find a Pico by USB id; the passkey then shows on the panel")
    for sp in (ap, run, pair, rerun):
        sp.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="storage, bonds, settings (default: %(default)s)")
        sp.add_argument("-v", "--verbose", action="store_true")
    pair.add_argument("--seconds", type=float, default=p.PAIRING_WINDOW_S, help="how long (default: %(default)s)")
    from .audio.cli import add_audio_parser

    add_audio_parser(sub, default_data_dir=DEFAULT_DATA_DIR)
    return ap


async def _serve_control(box, path: Path) -> asyncio.AbstractServer:
    """The control socket: one command per connection (``pair [seconds]``, ``status``, ``rerun JOB``)."""
    from .jobs import JobError

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode("utf-8", "replace").split()
            if line and line[0] == "pair":
                seconds = float(line[1]) if len(line) > 1 else p.PAIRING_WINDOW_S
                if not 0 < seconds <= 600:
                    raise ValueError(f"pairing window {seconds} s is out of range; use 1..600")
                box.pairing_window.open(seconds)
                answer = f"ok pairing window open for {seconds:.0f} s on {box.name}\n"
            elif line and line[0] == "status":
                answer = f"ok {box.name} {box.address} {box.jobs.status()}\n"
            elif line and line[0] == "rerun" and len(line) == 2:  # a job interrupted by a crash, again
                try:
                    again = box.jobs.rerun(int(line[1]))
                except JobError as exc:
                    raise ValueError(str(exc)) from None
                answer = f"ok job {line[1]} queued again as job {again.id}\n"
            else:
                answer = f"error unknown command {' '.join(line)!r}; use 'pair [seconds]', 'status' or 'rerun JOB'\n"
        except (ValueError, asyncio.TimeoutError) as exc:
            answer = f"error {exc}\n"
        writer.write(answer.encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o600)  # only the box's own user may open the pairing window
    return server


async def run_service(args) -> None:
    """Run the box until SIGINT/SIGTERM: radio, BLE peripheral, control socket, panel and jobs."""
    from bumble.transport import open_transport

    from .ble_server import MelismaBox

    data_dir = Path(args.data_dir)

    def show(passkey: int) -> None:
        print(f"PASSKEY {passkey:06d}", flush=True)

    show_passkey: Callable[[int], None] | None = show if args.passkey == "stdout" else None
    panel = None
    if getattr(args, "panel", None):
        from .panel_bridge import PanelBridge, PanelSettings

        panel = PanelBridge(PanelSettings.from_option(args.panel))
        show_passkey = panel.passkey_display(show_passkey)

    cfg = getattr(args, "box_config", None)  # box.toml, when --config was given
    extra = {}
    if cfg is not None:
        from .config import audio_settings

        extra["audio_settings"] = audio_settings(cfg.audio)  # [audio]: devices, rate, block size
    from .repair import load_identity

    load_identity(data_dir, args.address)  # a damaged identity is refused before the radio is touched
    try:
        transport = await open_transport(args.transport)
    except Exception as exc:  # bumble raises OSError, ValueError or its own errors here
        raise DeviceError(f"cannot open the radio transport {args.transport!r} ({exc}); check --transport "
                          f"(e.g. hci-socket:0 with BlueZ stopped, usb:0, tcp-client:127.0.0.1:9001)") from None
    async with transport as (hci_source, hci_sink):
        storage_cfg = cfg.storage if cfg is not None else None
        min_free_mib = storage_cfg.min_free_mib if storage_cfg is not None else 0
        box = MelismaBox(hci_source, hci_sink, data_dir=data_dir, address=args.address,
                         show_passkey=show_passkey, min_free_bytes=min_free_mib * 1024 * 1024,
                         rerun_interrupted=bool(storage_cfg and storage_cfg.rerun_interrupted_jobs), **extra)
        apply_storage_limits(box, cfg)
        s = box.audio.settings
        logger.info("audio: input %s, output %s, %d Hz, %d frames per buffer%s", s.input or "default",
                    s.output or "default", s.sample_rate, s.frames_per_buffer,
                    f" (from {cfg.source})" if cfg is not None else " (built-in defaults)")
        await box.start()
        write_heartbeat(data_dir, box, advertising=True)
        if panel is not None:
            await panel.start(box)
        control = await _serve_control(box, data_dir / "control.sock")
        if args.pairable:
            box.pairing_window.open()
        print(f"{box.name} ready at {box.address} (transport {args.transport})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        lost: str | None = None
        try:
            lost = await _until_stopped_or_radio_lost(stop, hci_source)
        finally:
            if panel is not None:
                await panel.stop()
            control.close()
            write_heartbeat(data_dir, box, advertising=False)
            await box.stop(radio=lost is None)  # a lost radio answers no HCI command: do not wait for one
            with contextlib.suppress(FileNotFoundError):
                (data_dir / "control.sock").unlink()
        if lost is not None:
            logger.error("radio transport %s lost (%s); stopping", args.transport, lost)
            raise RadioLostError(f"lost the radio transport {args.transport!r} while running ({lost}); the box "
                                 "stopped with every job journaled. Check the Bluetooth controller (cable, power, "
                                 "`hciconfig`) and start melisma-device again (systemd does so by itself)")


async def _until_stopped_or_radio_lost(stop: asyncio.Event, hci_source) -> str | None:
    """Wait for SIGINT/SIGTERM (returns None) or the loss of the HCI transport (returns why)."""
    terminated = getattr(hci_source, "terminated", None)  # Bumble's sources resolve it when the transport goes
    stopper = asyncio.ensure_future(stop.wait())
    waiting: set[asyncio.Future] = {stopper}
    if isinstance(terminated, asyncio.Future):
        waiting.add(terminated)
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    if stop.is_set() or not isinstance(terminated, asyncio.Future) or not terminated.done():
        return None
    if terminated.cancelled():
        return "the transport was closed"
    error = terminated.exception()
    return f"{type(error).__name__}: {error}" if error is not None else "the controller closed the connection"


async def request_pairing(data_dir: Path, seconds: float) -> str:
    """Ask the running service (over its control socket) to open the pairing window."""
    path = data_dir / "control.sock"
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise DeviceError(f"no running melisma-device service at {path}; start it with `melisma-device run` "
                          f"(or give the same --data-dir)") from None
    writer.write(f"pair {seconds}\n".encode())
    await writer.drain()
    answer = (await reader.readline()).decode().strip()
    writer.close()
    if not answer.startswith("ok"):
        raise DeviceError(f"the service refused: {answer}")
    return answer[3:]


async def control_request(data_dir: Path, line: str) -> str:
    """Send one line to the running service's control socket; return its answer after ``ok``.

    Raises :class:`~melisma.errors.DeviceError` when no service runs there or it refuses (its reason).
    """
    path = data_dir / "control.sock"
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        raise DeviceError(f"no running melisma-device service at {path}; start it with `melisma-device run` "
                          f"(or give the same --data-dir)") from None
    try:
        writer.write(f"{line}\n".encode())
        await writer.drain()
        answer = (await asyncio.wait_for(reader.readline(), 10)).decode("utf-8", "replace").strip()
    except (OSError, asyncio.TimeoutError) as exc:
        raise DeviceError(f"the melisma-device service at {path} did not answer ({exc or 'no answer in 10 s'}); "
                          "is it stuck? see its log (journalctl -u melisma-device)") from None
    finally:
        writer.close()
    if not answer.startswith("ok"):
        raise DeviceError(f"the box refused: {answer.removeprefix('error ')}")
    return answer[3:]


async def request_rerun(data_dir: Path, job_id: int) -> str:
    """Ask the running service to queue the interrupted job ``job_id`` again; says the new id."""
    return await control_request(data_dir, f"rerun {job_id}")


def apply_storage_limits(box, cfg) -> None:
    """Set the box's cache limits from box.toml's ``[storage]`` (defaults without a config file)."""
    if cfg is None:
        return
    from ..pipeline.cache import set_plan_cache_limit
    from .storage import StorageLimits

    box.storage.limits = StorageLimits.from_config(cfg.storage)
    set_plan_cache_limit(cfg.storage.plan_cache_mib)


#: Where the running service says it is up and advertising (read by the update health check).
HEARTBEAT_NAME = "health.json"


def write_heartbeat(data_dir: Path, box, *, advertising: bool) -> None:
    """Write ``<data-dir>/health.json``: pid, firmware version, address, advertising, time."""
    import json
    import time

    from .. import __version__
    from ..audio_io import atomic_write_text

    with contextlib.suppress(OSError):
        atomic_write_text(data_dir / HEARTBEAT_NAME, json.dumps({
            "pid": os.getpid(), "version": __version__, "name": box.name, "address": box.address,
            "advertising": advertising, "time": time.time()}), overwrite=True)


def _given_options(argv: list[str] | None) -> set[str]:
    """The option destinations given explicitly on the command line (they override box.toml)."""
    ap = _parser()
    parsers = [ap]
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    for parser in parsers:
        for action in parser._actions:
            if action.dest not in ("help", "command"):
                action.default = argparse.SUPPRESS
    return set(vars(ap.parse_args(argv)))


def apply_config(args: argparse.Namespace, argv: list[str] | None) -> None:
    """Fill the options not given on the command line from ``args.config`` (a checked box.toml)."""
    from .config import load_config

    cfg = load_config(args.config)
    given = _given_options(argv)
    mapping = {"transport": cfg.ble.transport, "address": cfg.ble.address or None, "passkey": cfg.ble.passkey,
               "pairable": cfg.ble.pairable_at_start, "data_dir": cfg.storage.data_dir,
               "panel": None if cfg.panel.port == "none" else cfg.panel.port}
    for dest, value in mapping.items():
        if dest not in given and hasattr(args, dest):
            setattr(args, dest, value)
    if "verbose" not in given:
        args.log_level = cfg.log.level
    args.box_config = cfg


def main(argv: list[str] | None = None) -> int:
    """Run ``melisma-device``; errors print one line and exit non-zero."""
    args = _parser().parse_args(argv)
    if getattr(args, "config", None):
        try:
            apply_config(args, argv)
        except MelismaError as exc:
            print(f"melisma-device: {exc}", file=sys.stderr)
            return exc.exit_code
    level = getattr(args, "log_level", None)
    logging.basicConfig(level=logging.DEBUG if args.verbose else getattr(logging, (level or "info").upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "pair":
            print(asyncio.run(request_pairing(Path(args.data_dir), args.seconds)))
        elif args.command == "rerun":
            print(asyncio.run(request_rerun(Path(args.data_dir), args.job)))
        elif args.command == "audio":
            from .audio.cli import run_audio

            return run_audio(args)
        else:
            asyncio.run(run_service(args))
    except MelismaError as exc:
        print(f"melisma-device: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
