"""PortAudio devices: listing, picking by index or name, checking a rate and block size.

PyAudio is imported lazily, so the rest of the device service (and the phone build, which only
imports :mod:`melisma.protocol`) never needs PortAudio.

PortAudio only sees a JACK server that is running when it is initialised, so
:func:`portaudio` is opened per command, not once per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import AudioDeviceError

#: Defaults of the box (the ``[audio]`` section of the config uses the same values).
DEFAULT_SAMPLE_RATE = 48000
DEFAULT_FRAMES_PER_BUFFER = 128
#: Block sizes the box accepts (frames); PortAudio takes any, these bound latency and overhead.
MIN_FRAMES_PER_BUFFER = 16
MAX_FRAMES_PER_BUFFER = 4096
#: Rates probed to tell the user what a device supports.
STANDARD_RATES = (8000, 16000, 22050, 32000, 44100, 48000, 88200, 96000)

#: Device names that mean a Bluetooth sink (BlueZ through PipeWire/PulseAudio, BlueALSA, or the
#: word itself). A2DP adds 150-300 ms: monitoring through it is unusable.
_BLUETOOTH_RE = re.compile(r"blue(z|alsa|tooth)|a2dp|\bbt\b|airpods|headset \(hfp\)", re.IGNORECASE)


@dataclass(frozen=True)
class AudioSettings:
    """What the audio commands need; the lead wires the ``[audio]`` config section into this.

    Parameters
    ----------
    input, output : str or int, optional
        A device index or a case-insensitive name substring; ``None`` picks the default device
        (JACK's when a JACK server runs, else PortAudio's default).
    sample_rate : int
        Hz (default 48000).
    frames_per_buffer : int
        Block size in frames (default 128).
    """

    input: str | int | None = None
    output: str | int | None = None
    sample_rate: int = DEFAULT_SAMPLE_RATE
    frames_per_buffer: int = DEFAULT_FRAMES_PER_BUFFER

    def __post_init__(self) -> None:
        if not MIN_FRAMES_PER_BUFFER <= int(self.frames_per_buffer) <= MAX_FRAMES_PER_BUFFER:
            raise AudioDeviceError(f"block size {self.frames_per_buffer} frames is out of range; use "
                                   f"{MIN_FRAMES_PER_BUFFER}..{MAX_FRAMES_PER_BUFFER} "
                                   f"(default {DEFAULT_FRAMES_PER_BUFFER})")
        if not 8000 <= int(self.sample_rate) <= 192000:
            raise AudioDeviceError(f"sample rate {self.sample_rate} Hz is out of range; use 8000..192000 "
                                   f"(default {DEFAULT_SAMPLE_RATE})")


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device, as ``audio list --json`` prints it."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate: float
    default_low_input_latency_ms: float
    default_low_output_latency_ms: float
    default_high_input_latency_ms: float
    default_high_output_latency_ms: float
    default_input: bool
    default_output: bool
    bluetooth: bool
    #: Why it counts as Bluetooth ("" when it does not): what :func:`bluetooth_reason` found.
    bluetooth_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)

    @property
    def label(self) -> str:
        """``#index 'name' (host API)`` for messages."""
        return f"#{self.index} {self.name!r} ({self.host_api})"


def is_bluetooth(name: str) -> bool:
    """Whether a device name looks like a Bluetooth sink or source.

    >>> is_bluetooth("bluez_output.AC_12_2F.1"), is_bluetooth("bluealsa"), is_bluetooth("system")
    (True, True, False)
    """
    return bool(_BLUETOOTH_RE.search(name))


@contextlib.contextmanager
def portaudio(quiet: bool = True) -> Iterator[Any]:
    """Initialise PortAudio (``pyaudio.PyAudio()``) for one command and terminate it afterwards.

    ALSA prints a page of warnings on stderr when probing a machine without sound cards; with
    ``quiet`` those are sent to /dev/null while PortAudio initialises (only then).
    """
    try:
        import pyaudio
    except ImportError:  # pragma: no cover - depends on the install
        raise AudioDeviceError("the box's audio needs PyAudio; install it with `pip install 'melisma[box-audio]'` "
                               "(and Debian's portaudio19-dev to build it)") from None
    saved = None
    if quiet:
        try:
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
        except OSError:  # pragma: no cover - no stderr
            saved = None
    try:
        pa = pyaudio.PyAudio()
    finally:
        if saved is not None:
            os.dup2(saved, 2)
            os.close(saved)
    try:
        yield pa
    finally:
        pa.terminate()


def list_devices(pa: Any) -> list[DeviceInfo]:
    """All devices PortAudio sees, in index order."""
    try:
        default_in = pa.get_default_input_device_info()["index"]
    except OSError:
        default_in = -1
    try:
        default_out = pa.get_default_output_device_info()["index"]
    except OSError:
        default_out = -1
    out = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        api = pa.get_host_api_info_by_index(d["hostApi"])["name"]
        name = str(d["name"])
        out.append(DeviceInfo(
            index=i, name=name, host_api=api, max_input_channels=int(d["maxInputChannels"]),
            max_output_channels=int(d["maxOutputChannels"]), default_sample_rate=float(d["defaultSampleRate"]),
            default_low_input_latency_ms=round(1000 * float(d["defaultLowInputLatency"]), 3),
            default_low_output_latency_ms=round(1000 * float(d["defaultLowOutputLatency"]), 3),
            default_high_input_latency_ms=round(1000 * float(d["defaultHighInputLatency"]), 3),
            default_high_output_latency_ms=round(1000 * float(d["defaultHighOutputLatency"]), 3),
            default_input=i == default_in, default_output=i == default_out, bluetooth=False))
    probe = BluetoothProbe()
    for k, d in enumerate(out):
        why = probe.reason(d.name, d.host_api)
        if why:
            out[k] = dataclasses.replace(d, bluetooth=True, bluetooth_reason=why)
    return out


# ---------------------------------------------------------------------------------------------
# Bluetooth sinks: the sound server's properties, ALSA's card bus, then the name.

#: PortAudio device names that stand for the sound server's default sink / source.
SERVER_DEVICES = ("pulse", "pipewire", "default", "sysdefault")


def parse_pactl_sinks(text: str) -> dict[str, dict[str, str]]:
    r"""``pactl list sinks`` (or ``sources``) text -> ``{name: properties}`` (``device.bus``, ``device.api``, ...).

    >>> t = 'Sink #1\n\tName: bluez_output.AC_12.1\n\tProperties:\n\t\tdevice.bus = "bluetooth"\n'
    >>> parse_pactl_sinks(t)
    {'bluez_output.AC_12.1': {'device.bus': 'bluetooth'}}
    """
    sinks: dict[str, dict[str, str]] = {}
    name = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("Sink #", "Source #")):
            name = None
        elif stripped.startswith("Name:"):
            name = stripped.split(":", 1)[1].strip()
            sinks[name] = {}
        elif name is not None and " = " in stripped:
            k, v = stripped.split(" = ", 1)
            sinks[name][k.strip()] = v.strip().strip('"')
    return sinks


def _is_bt_props(props: dict[str, str]) -> bool:
    return props.get("device.bus") == "bluetooth" or props.get("device.api") in ("bluez5", "bluez")


class BluetoothProbe:
    """Tells Bluetooth devices by what the system says about them, with the name as the fallback.

    - a device that stands for the sound server (``pulse``, ``pipewire``, ``default``) is
      Bluetooth when the server's default sink has ``device.bus = "bluetooth"`` (or
      ``device.api = "bluez5"``) in ``pactl list sinks``; PipeWire answers ``pactl`` too;
    - an ALSA hardware device (``... (hw:N,M)``) is Bluetooth when its card hangs off a
      Bluetooth bus in sysfs (``/sys/class/sound/cardN/device`` resolves under ``bluetooth``);
    - a device named like one (``bluez_output...``, ``bluealsa``, ``a2dp``, "Bluetooth").

    ``run`` (tests) replaces the call of ``pactl``; ``sysfs`` the sysfs root.
    """

    def __init__(self, *, run=None, sysfs: str = "/sys"):
        self._run = run or _run_pactl
        self.sysfs = sysfs
        self._sinks: dict[str, dict[str, str]] | None = None
        self._default: str | None = None

    def _server(self) -> tuple[dict[str, dict[str, str]], str | None]:
        if self._sinks is None:
            self._sinks = parse_pactl_sinks(self._run(["list", "sinks"]) or "")
            self._default = (self._run(["get-default-sink"]) or "").strip() or None
        return self._sinks, self._default

    def reason(self, name: str, host_api: str = "") -> str:
        """Why the device ``name`` is Bluetooth, or ``""``."""
        low = name.strip().lower()
        if low in SERVER_DEVICES or low.startswith(("pulse", "pipewire")):
            sinks, default = self._server()
            if default and default in sinks and _is_bt_props(sinks[default]):
                return f"the sound server's default sink {default!r} is device.bus=bluetooth"
        sinks = self._sinks or {}
        for sink, props in sinks.items():  # PortAudio's PulseAudio host names devices after the sinks
            if (low == sink.lower() or low == props.get("device.description", "").lower()) and _is_bt_props(props):
                return f"sound-server sink {sink!r} is device.bus=bluetooth"
        m = re.search(r"\(hw:(\d+),\d+\)", name)
        if m:
            dev = os.path.join(self.sysfs, "class", "sound", f"card{m.group(1)}", "device")
            try:
                if "bluetooth" in os.path.realpath(dev).lower().split(os.sep):
                    return f"ALSA card {m.group(1)} is on a Bluetooth bus"
            except OSError:
                pass
        if is_bluetooth(name):
            return "named like a Bluetooth device"
        return ""


def _pulse_socket() -> str | None:
    """The PulseAudio/PipeWire-pulse socket of this user, when a server runs."""
    server = os.environ.get("PULSE_SERVER", "")
    if server:
        return server
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    for path in (os.path.join(runtime, "pulse", "native"), "/run/pulse/native", "/var/run/pulse/native"):
        if os.path.exists(path):
            return path
    return None


def _run_pactl(args: list[str]) -> str | None:
    import shutil
    import subprocess

    exe = shutil.which("pactl")
    if exe is None or not _pulse_socket():
        return None  # no server to ask (and never let pactl autospawn one)
    try:
        res = subprocess.run([exe, *args], capture_output=True, text=True, timeout=2.0,
                             env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def _jack_default(pa: Any, kind: str) -> int | None:
    import pyaudio

    try:
        api = pa.get_host_api_info_by_type(pyaudio.paJACK)
    except (OSError, ValueError):
        return None
    idx = api.get("defaultInputDevice" if kind == "input" else "defaultOutputDevice", -1)
    return int(idx) if idx is not None and idx >= 0 else None


def pick_device(pa: Any, spec: str | int | None, kind: str) -> DeviceInfo:
    """The device for ``spec``: an index, a case-insensitive name substring, or ``None`` (the default).

    Parameters
    ----------
    pa : pyaudio.PyAudio
    spec : str or int or None
    kind : {"input", "output"}

    Raises
    ------
    AudioDeviceError
        No such device, an ambiguous name, or a device without channels of that kind; the
        message lists the devices that would work.
    """
    devices = list_devices(pa)
    channels = (lambda d: d.max_input_channels) if kind == "input" else (lambda d: d.max_output_channels)
    usable = [d for d in devices if channels(d) > 0]
    choices = "; ".join(d.label for d in usable) or "none (is a sound card or a JACK server there?)"
    if spec is None or spec == "":
        idx = _jack_default(pa, kind)
        if idx is None:
            idx = next((d.index for d in devices if (d.default_input if kind == "input" else d.default_output)), None)
        if idx is None or channels(devices[idx]) == 0:
            raise AudioDeviceError(f"no default {kind} device; pick one with --{kind} (an index or a name): {choices}")
        return devices[idx]
    text = str(spec).strip()
    if text.isdigit():
        i = int(text)
        if not 0 <= i < len(devices):
            raise AudioDeviceError(f"{kind} device #{i} does not exist; {kind} devices are: {choices}")
        if channels(devices[i]) == 0:
            raise AudioDeviceError(f"device {devices[i].label} has no {kind} channels; {kind} devices are: {choices}")
        return devices[i]
    matches = [d for d in usable if text.lower() in d.name.lower()]
    exact = [d for d in matches if d.name.lower() == text.lower()]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AudioDeviceError(f"no {kind} device named like {text!r}; {kind} devices are: {choices}")
    raise AudioDeviceError(f"{kind} device {text!r} is ambiguous: {'; '.join(d.label for d in matches)}; "
                           f"give its index or a longer part of its name")


def supported_rates(pa: Any, device: DeviceInfo, kind: str, channels: int) -> list[int]:
    """The standard rates the device accepts for ``channels`` float32 channels of ``kind``."""
    import pyaudio

    rates = []
    for rate in STANDARD_RATES:
        kw = ({"input_device": device.index, "input_channels": channels, "input_format": pyaudio.paFloat32}
              if kind == "input" else
              {"output_device": device.index, "output_channels": channels, "output_format": pyaudio.paFloat32})
        try:
            if pa.is_format_supported(rate, **kw):
                rates.append(rate)
        except ValueError:
            pass
    return rates


def check_format(pa: Any, device: DeviceInfo, kind: str, *, sample_rate: int, channels: int) -> None:
    """Raise :class:`AudioDeviceError` naming what the device supports when it cannot run ``sample_rate``."""
    import pyaudio

    have = device.max_input_channels if kind == "input" else device.max_output_channels
    if channels > have:
        raise AudioDeviceError(f"{kind} device {device.label} has {have} {kind} channel(s); {channels} asked")
    kw = ({"input_device": device.index, "input_channels": channels, "input_format": pyaudio.paFloat32}
          if kind == "input" else
          {"output_device": device.index, "output_channels": channels, "output_format": pyaudio.paFloat32})
    try:
        pa.is_format_supported(sample_rate, **kw)
    except ValueError as exc:
        rates = supported_rates(pa, device, kind, channels)
        raise AudioDeviceError(
            f"{kind} device {device.label} cannot run at {sample_rate} Hz ({exc.args[0] if exc.args else exc}); "
            f"it supports {', '.join(f'{r} Hz' for r in rates) or 'none of the standard rates'} "
            f"(its default is {device.default_sample_rate:g} Hz); pass --rate") from None
