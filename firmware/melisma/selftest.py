"""``melisma selftest``: the checks a freshly installed slot must pass before the box switches to it.

1. **models** — every int8 model loads through the TFLite runtime and runs once on zeros;
2. **mix** — a short synthetic take is mixed over a synthetic backing by the engine, the output
   decodes and is not silent;
3. **ble** — the box's BLE peripheral starts on a Bumble virtual link (a virtual controller, no
   radio), advertises, and a virtual central scanning on the same link sees its name.

Each check prints one line; the last line says ``selftest passed`` (exit 0) or names the first
failure (exit 12). Nothing outside a temporary folder is written.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .errors import MelismaError, UpdateError


def check_models() -> str:
    """Load and run every model under ``models_dir()``."""
    import numpy as np

    from .models_runtime import TfliteModel, models_dir

    paths = sorted(models_dir().glob("*/*.tflite"))
    if not paths:
        raise UpdateError(f"no .tflite models under {models_dir()}; the slot is incomplete")
    for path in paths:
        model = TfliteModel(path)
        shapes = [tuple(max(1, int(s)) for s in d["shape"]) for d in model.input_details]
        outs = model.predict(*(np.zeros(s, np.float32) for s in shapes))
        if not outs or not all(np.all(np.isfinite(o)) for o in outs):
            raise UpdateError(f"{path.name} gave no finite output on zeros")
    return f"{len(paths)} models load and run ({model.runtime})"


def check_mix(work: Path) -> str:
    """Mix two seconds of a sung-like tone over a two-chord backing."""
    import numpy as np

    from . import audio_io, pipeline

    sr = 48000
    t = np.arange(2 * sr) / sr
    f0 = 220 * 2 ** (0.3 * np.sin(2 * np.pi * 5.5 * t) / 12)
    take = (0.2 * np.sin(2 * np.pi * np.cumsum(f0) / sr) * np.minimum(1, t * 4)).astype(np.float32)
    backing = np.stack([0.1 * np.sin(2 * np.pi * 110 * t), 0.1 * np.sin(2 * np.pi * 165 * t)]).astype(np.float32)
    audio_io.write_audio(work / "take.wav", take, sr=sr)
    audio_io.write_audio(work / "backing.wav", backing, sr=sr)
    t0 = time.perf_counter()
    pipeline.mix_files(work / "take.wav", work / "backing.wav", work / "mix.wav", pitch=False)
    audio, _ = audio_io.load_audio(work / "mix.wav")
    if audio.size == 0 or not np.isfinite(audio).all() or float(np.max(np.abs(audio))) < 1e-3:
        raise UpdateError("the test mix came out empty or silent")
    return f"a 2 s mix renders ({time.perf_counter() - t0:.1f} s)"


async def _ble(work: Path) -> str:
    from bumble.device import Device
    from bumble.hci import Address
    from bumble.link import LocalLink

    from . import protocol as p
    from .device.ble_server import MelismaBox, local_link_hci

    link = LocalLink()
    address = "F0:5E:1F:7E:57:01"
    src, sink = local_link_hci(link, address)
    box = MelismaBox(src, sink, data_dir=work / "ble", address=address, engine=object())
    await box.start()
    try:
        csrc, csink = local_link_hci(link, "C0:5E:1F:7E:57:02")
        central = Device.with_hci("selftest-central", Address("C0:5E:1F:7E:57:02"), csrc, csink)
        await central.power_on()
        seen: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_adv(adv) -> None:
            if not seen.done() and str(adv.address).startswith(address):
                seen.set_result(adv)

        central.on(Device.EVENT_ADVERTISEMENT, on_adv)
        await central.start_scanning(active=True, filter_duplicates=False)
        await asyncio.wait_for(seen, 10)
        await central.stop_scanning()
        await central.power_off()
    finally:
        await box.stop()
    return f"BLE peripheral advertises as {p.advertised_name(address)} on a virtual link"


def check_ble(work: Path) -> str:
    """Start the box's GATT peripheral on a virtual link and see its advertisement from a central."""
    try:
        return asyncio.run(asyncio.wait_for(_ble(work), 30))
    except asyncio.TimeoutError:
        raise UpdateError("the BLE peripheral did not advertise within 10 s on a virtual link") from None


CHECKS: dict[str, Callable[[Path], str]] = {
    "models": lambda work: check_models(),
    "mix": check_mix,
    "ble": check_ble,
}


def run_selftest(*, out=print) -> int:
    """Run every check, print one line each; 0 when all pass, else the failing error's code."""
    with tempfile.TemporaryDirectory(prefix="melisma-selftest-") as tmp:
        for name, check in CHECKS.items():
            try:
                line = check(Path(tmp))
            except MelismaError as exc:
                out(f"selftest failed: {name}: {exc}")
                return UpdateError.exit_code
            except Exception as exc:
                out(f"selftest failed: {name}: {type(exc).__name__}: {exc}")
                return UpdateError.exit_code
            out(f"  ok {name}: {line}")
    out("selftest passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``melisma selftest``."""
    return run_selftest()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
