"""The box's configuration file (``/etc/melisma/box.toml``): a typed, range-checked TOML schema.

Every key has a type, a default and a rule (a range or a list of choices). :func:`load_config`
reads a file, refuses the first bad value with a :class:`~melisma.errors.ConfigError` that names
the key, the value and what would work, and reports unknown keys (they are ignored, listed in
``BoxConfig.unknown`` and logged, so a typo never goes unnoticed). :data:`DEFAULT_CONFIG_TEXT` is
the shipped default (installed as ``/etc/melisma/box.toml`` at first install): every key, its
default and its rule, commented.

Examples
--------
>>> from melisma.device.config import parse_config
>>> cfg = parse_config('[audio]\\nsample_rate_hz = 44100\\n[ble]\\ncolour = "blue"\\n')
>>> cfg.audio.sample_rate_hz, cfg.audio.frames_per_buffer, cfg.unknown
(44100, 128, ['ble.colour'])
>>> parse_config('[audio]\\nframes_per_buffer = 100\\n')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
melisma.errors.ConfigError: box.toml: audio.frames_per_buffer = 100 is not allowed; use a power of two from 16 to 4096...
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (the project supports it; Raspberry Pi OS Bookworm has 3.11)
    import tomli as tomllib

logger = logging.getLogger(__name__)

#: Where the installed box keeps its configuration.
DEFAULT_CONFIG_PATH = Path("/etc/melisma/box.toml")

#: Bumble transport names the box can use (the part before the first colon).
TRANSPORT_SCHEMES = ("hci-socket", "usb", "serial", "tcp-client", "tcp-server", "android-netsim", "vhci")
ADDRESS_PATTERN = re.compile(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}")
LOG_LEVELS = ("debug", "info", "warning", "error")
SAMPLE_RATES = (44100, 48000, 88200, 96000)


@dataclass(frozen=True)
class Rule:
    """How one key is checked: ``check(value)`` returns the clean value or None when it is refused."""

    kind: type
    check: Callable[[Any], Any]
    allowed: str  # what would work, in words
    doc: str


def _choice(options: tuple) -> Callable[[Any], Any]:
    return lambda v: v if v in options else None


def _int_range(lo: int, hi: int) -> Callable[[Any], Any]:
    return lambda v: v if lo <= v <= hi else None


def _float_range(lo: float, hi: float) -> Callable[[Any], Any]:
    return lambda v: float(v) if lo <= v <= hi else None


def _transport(v: str) -> str | None:
    scheme = v.split(":", 1)[0]
    return v if scheme in TRANSPORT_SCHEMES and (":" in v or scheme in ("vhci",)) else None


def _address(v: str) -> str | None:
    return v.upper() if v == "" or (ADDRESS_PATTERN.fullmatch(v) and int(v[:2], 16) >= 0xC0) else None


def _panel_port(v: str) -> str | None:
    return v if v in ("auto", "none") or v.startswith("/") else None


def _power_of_two(lo: int, hi: int) -> Callable[[Any], Any]:
    return lambda v: v if lo <= v <= hi and v & (v - 1) == 0 else None


def _absolute_path(v: str) -> str | None:
    return v if v.startswith("/") else None


#: The schema: section -> key -> (default, rule). The dataclasses below mirror it.
SCHEMA: dict[str, dict[str, tuple[Any, Rule]]] = {
    "ble": {
        "transport": (
            "hci-socket:0",
            Rule(
                str,
                _transport,
                f"a Bumble transport such as hci-socket:0, usb:0, "
                f"serial:/dev/ttyAMA0,1000000 or tcp-client:127.0.0.1:9001 "
                f"(schemes: {', '.join(TRANSPORT_SCHEMES)})",
                "the radio: hci-socket:0 is the Pi's own (taken from BlueZ)",
            ),
        ),
        "address": (
            "",
            Rule(
                str,
                _address,
                'a static random address like "F0:12:34:56:78:9A" (first byte C0..FF), or "" to make one once and keep it',
                "the box's Bluetooth address",
            ),
        ),
        "passkey": (
            "none",
            Rule(
                str,
                _choice(("none", "stdout")),
                "one of none, stdout",
                "none: Just Works inside the pairing window; stdout: print a passkey (display)",
            ),
        ),
        "pairable_at_start": (False, Rule(bool, lambda v: v, "true or false", "open the pairing window when the service starts")),
    },
    "audio": {
        "input": ("default", Rule(str, lambda v: v or None, 'a PortAudio device name or "default"', "recording device")),
        "output": ("default", Rule(str, lambda v: v or None, 'a PortAudio device name or "default"', "playback device")),
        "sample_rate_hz": (
            48000,
            Rule(int, _choice(SAMPLE_RATES), "one of " + ", ".join(map(str, SAMPLE_RATES)), "the box's own audio rate"),
        ),
        "frames_per_buffer": (
            128,
            Rule(
                int, _power_of_two(16, 4096), "a power of two from 16 to 4096", "PortAudio block size (latency = frames / rate)"
            ),
        ),
    },
    "panel": {
        "port": (
            "auto",
            Rule(
                str,
                _panel_port,
                'auto, none, or a serial device path such as "/dev/ttyACM0"',
                "the MicroPython front panel's USB serial port",
            ),
        ),
    },
    "storage": {
        "data_dir": (
            "/var/lib/melisma",
            Rule(
                str,
                _absolute_path,
                'an absolute path such as "/var/lib/melisma"',
                "takes, mixes, bonds, calibration (never touched by updates)",
            ),
        ),
        "max_file_mib": (
            128,
            Rule(int, _int_range(1, 128), "an integer from 1 to 128", "largest upload in MiB (the protocol allows 128)"),
        ),
        "min_free_mib": (
            256,
            Rule(
                int,
                _int_range(0, 65536),
                "an integer from 0 to 65536",
                "refuse uploads that would leave less free space than this",
            ),
        ),
        "plan_cache_mib": (
            256,
            Rule(
                int,
                _int_range(0, 65536),
                "an integer from 0 to 65536",
                "corrected and dry vocals kept beside each plan for fast re-renders "
                "(least recently used deleted first; 0 keeps none)",
            ),
        ),
        "previews_mib": (
            64,
            Rule(int, _int_range(0, 65536), "an integer from 0 to 65536", "previews kept (least recently used deleted first)"),
        ),
        "work_mib": (
            2048,
            Rule(
                int,
                _int_range(0, 65536),
                "an integer from 0 to 65536",
                "render work files kept over all plans together (least recently used deleted first)",
            ),
        ),
        "rerun_interrupted_jobs": (
            False,
            Rule(bool, lambda v: v, "true or false", "queue a job cut off by a crash or power cut again at start"),
        ),
    },
    "log": {
        "level": ("info", Rule(str, _choice(LOG_LEVELS), "one of " + ", ".join(LOG_LEVELS), "journald log level")),
    },
    "update": {
        "health_timeout_s": (
            90.0,
            Rule(
                float,
                _float_range(5.0, 600.0),
                "a number of seconds from 5 to 600",
                "how long the health check after an update may take before it rolls back",
            ),
        ),
    },
}


@dataclass(frozen=True)
class BleConfig:
    transport: str = "hci-socket:0"
    address: str = ""
    passkey: str = "none"
    pairable_at_start: bool = False


@dataclass(frozen=True)
class AudioConfig:
    input: str = "default"
    output: str = "default"
    sample_rate_hz: int = 48000
    frames_per_buffer: int = 128


@dataclass(frozen=True)
class PanelConfig:
    port: str = "auto"


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = "/var/lib/melisma"
    max_file_mib: int = 128
    min_free_mib: int = 256
    plan_cache_mib: int = 256
    previews_mib: int = 64
    work_mib: int = 2048
    rerun_interrupted_jobs: bool = False


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True)
class UpdateConfig:
    health_timeout_s: float = 90.0


@dataclass(frozen=True)
class BoxConfig:
    """The whole file, typed; ``unknown`` lists the keys the file had that the schema does not know."""

    ble: BleConfig = field(default_factory=BleConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    log: LogConfig = field(default_factory=LogConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    unknown: list[str] = field(default_factory=list)
    source: str = "built-in defaults"

    def get(self, dotted: str) -> Any:
        """The value of ``section.key``."""
        section, key = dotted.split(".", 1)
        return getattr(getattr(self, section), key)


#: Each schema section's dataclass (BleConfig, AudioConfig, ...) by section name, read off the defaults.
_SECTION_CLASSES: dict[str, type] = {f.name: type(getattr(BoxConfig(), f.name)) for f in fields(BoxConfig) if f.name in SCHEMA}


def _check(name: str, section: str, key: str, value: Any) -> Any:
    default, rule = SCHEMA[section][key]
    what = f"{section}.{key}"
    ok_type = isinstance(value, rule.kind) and not (rule.kind is not bool and isinstance(value, bool))
    if rule.kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok_type = True
    clean = rule.check(value) if ok_type else None
    if clean is None:
        raise ConfigError(
            f"{name}: {what} = {_toml_repr(value)} is not allowed; use {rule.allowed} (default {_toml_repr(default)})"
        )
    return clean


def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def config_from_dict(data: dict[str, Any], *, name: str = "box.toml") -> BoxConfig:
    """Check a parsed TOML document against :data:`SCHEMA` and build a :class:`BoxConfig`.

    Raises
    ------
    ConfigError
        For the first value of the wrong type or out of range (naming key, value and what would work).
    """
    unknown: list[str] = []
    sections: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SCHEMA:
            unknown.append(section)
            continue
        if not isinstance(values, dict):
            raise ConfigError(
                f"{name}: {section} = {_toml_repr(values)} is not allowed; [{section}] is a table "
                f"with keys {', '.join(SCHEMA[section])}"
            )
        clean = {}
        for key, value in values.items():
            if key not in SCHEMA[section]:
                unknown.append(f"{section}.{key}")
                continue
            clean[key] = _check(name, section, key, value)
        sections[section] = _SECTION_CLASSES[section](**clean)
    cfg = BoxConfig(**sections, unknown=unknown, source=name)
    for key in unknown:
        known = ", ".join(SCHEMA) if "." not in key else ", ".join(SCHEMA[key.split(".")[0]])
        logger.warning("%s: unknown key %s is ignored (known here: %s)", name, key, known)
    return cfg


def parse_config(text: str, *, name: str = "box.toml") -> BoxConfig:
    """Parse TOML text (see :func:`config_from_dict`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{name}: not valid TOML ({exc}); compare with the shipped default (melisma-device default-config)"
        ) from None
    return config_from_dict(data, name=name)


def load_config(path: str | os.PathLike) -> BoxConfig:
    """Read and check the configuration file at ``path``.

    Raises
    ------
    ConfigError
        When the file is missing, unreadable, not TOML, or holds a bad value.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {p} does not exist; write one from the shipped default (melisma-device default-config > {p})"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} cannot be read ({exc}); check its permissions and encoding") from None
    return parse_config(text, name=str(p))


def default_config_text() -> str:
    """The shipped default ``box.toml``: every key with its default, its rule and what it does."""
    lines = [
        "# Melisma box configuration (/etc/melisma/box.toml).",
        "# Every key is optional; a bad value stops the service with a message naming the key.",
        "# Command-line flags of `melisma-device run` override these values.",
        "",
    ]
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, (default, rule) in keys.items():
            lines.append(f"# {rule.doc}; {rule.allowed}")
            lines.append(f"{key} = {_toml_repr(default)}")
        lines.append("")
    return "\n".join(lines)


DEFAULT_CONFIG_TEXT = default_config_text()


def audio_settings(audio: AudioConfig) -> Any:
    r"""The box's audio settings (:class:`melisma.device.audio.devices.AudioSettings`) from ``[audio]``.

    ``"default"`` picks the default device (JACK's when a JACK server runs); any other text is a
    PortAudio device name, or part of one (an index when it is all digits).

    Examples
    --------
    >>> cfg = parse_config('[audio]\ninput = "USB Mic"\nsample_rate_hz = 44100\nframes_per_buffer = 256\n')
    >>> audio_settings(cfg.audio)
    AudioSettings(input='USB Mic', output=None, sample_rate=44100, frames_per_buffer=256)
    """
    from .audio.devices import AudioSettings

    def device(name: str) -> str | None:
        return None if name.strip().lower() == "default" else name

    return AudioSettings(
        input=device(audio.input),
        output=device(audio.output),
        sample_rate=audio.sample_rate_hz,
        frames_per_buffer=audio.frames_per_buffer,
    )


__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_CONFIG_TEXT",
    "SCHEMA",
    "BoxConfig",
    "audio_settings",
    "config_from_dict",
    "default_config_text",
    "load_config",
    "parse_config",
]
