"""Style presets and semantic sliders, turned into vocal-chain settings.

Everything a user can say about the mix ("C-pop", "warmer", "wetter", "vocal forward") lands
here and becomes numbers with units. Two tables hold all the numbers, so they are easy to find,
argue about and change:

- :data:`STYLE_PRESETS`: one dict per style (``cpop``, ``western``, ``ballad``, ``neutral``).
- :data:`SLIDERS`: one dict per slider, each a number in -1...+1, with what it maps to.

Both are mirrored, with the reasoning and sources, in ``firmware/docs/mixing.md``.
:func:`resolve_settings` combines a preset with slider positions into :class:`MixSettings`;
the analysis-dependent numbers (compressor threshold, de-esser band, delay time from the tempo)
are filled in later by :func:`melisma.render.chain.build_vocal_chain`.

This module imports nothing heavy (no numpy, no pedalboard), so the companion app and the BLE
layer can use it to validate slider values.

Examples
--------
>>> from melisma.semantic import resolve_settings
>>> s = resolve_settings("cpop", {"reverb": 0.5, "vocal_level": -1.0})
>>> s.vocal_to_backing_lu   # cpop's +4 LU, moved back 3 LU
1.0
>>> s.reverb.wet_level > resolve_settings("cpop").reverb.wet_level
True
"""

from __future__ import annotations

import copy
import math
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

# --------------------------------------------------------------------------------------------
# Style presets. Units are in the key names. vocal_to_backing_lu is the loudness (LUFS) of the
# processed vocal minus that of the backing, the "lead-to-accompaniment ratio" (LAR).
# Gerdes & Siedenburg (2023, JASA Express Letters 3, 043201) measured about +1 dB LAR for
# Western popular music since 1975 (positive for pop, ~0 for rock). The C-pop/KTV value is a
# HYPOTHESIS (vocal clearly forward), to be checked against real C-pop mixes.
# --------------------------------------------------------------------------------------------
STYLE_PRESETS: dict[str, dict[str, Any]] = {
    "neutral": {
        "doc": "A plain, polished vocal: moderate level, short plate-like room, no tempo delay.",
        "vocal_to_backing_lu": 2.0,
        "duck_db": 1.0,
        "eq": {"low_shelf_hz": 200.0, "low_shelf_db": 0.0, "presence_hz": 3500.0, "presence_db": 0.0,
               "air_hz": 11000.0, "air_db": 0.0},
        "compressor": {"ratio": 3.0, "target_gr_db": 4.0, "attack_ms": 10.0, "release_ms": 120.0},
        "deesser": {"target_reduction_db": 5.0, "max_reduction_db": 8.0, "ratio": 4.0,
                    "attack_ms": 1.0, "release_ms": 60.0},
        "reverb": {"room_size": 0.45, "wet_level": 0.09, "damping": 0.5, "predelay_ms": 20.0, "width": 0.8},
        "delay": {"note": "1/4", "time_ms": 350.0, "feedback": 0.15, "mix": 0.0},
    },
    "cpop": {
        "doc": "C-pop / KTV: vocal clearly forward, bright and lush (long reverb, audible echo).",
        "vocal_to_backing_lu": 4.0,
        "duck_db": 2.0,
        "eq": {"low_shelf_hz": 200.0, "low_shelf_db": -0.5, "presence_hz": 3500.0, "presence_db": 1.5,
               "air_hz": 11000.0, "air_db": 2.0},
        "compressor": {"ratio": 3.5, "target_gr_db": 4.0, "attack_ms": 10.0, "release_ms": 120.0},
        "deesser": {"target_reduction_db": 6.0, "max_reduction_db": 9.0, "ratio": 4.0,
                    "attack_ms": 1.0, "release_ms": 60.0},
        "reverb": {"room_size": 0.75, "wet_level": 0.12, "damping": 0.35, "predelay_ms": 35.0, "width": 1.0},
        "delay": {"note": "1/4", "time_ms": 375.0, "feedback": 0.25, "mix": 0.10},
    },
    "western": {
        "doc": "UK/modern pop: vocal about +1 LU over the band, drier and closer, tighter compression.",
        "vocal_to_backing_lu": 1.0,
        "duck_db": 1.0,
        "eq": {"low_shelf_hz": 200.0, "low_shelf_db": -1.0, "presence_hz": 3500.0, "presence_db": 1.0,
               "air_hz": 11000.0, "air_db": 1.0},
        "compressor": {"ratio": 4.0, "target_gr_db": 4.5, "attack_ms": 10.0, "release_ms": 120.0},
        "deesser": {"target_reduction_db": 5.0, "max_reduction_db": 8.0, "ratio": 4.0,
                    "attack_ms": 1.0, "release_ms": 50.0},
        "reverb": {"room_size": 0.35, "wet_level": 0.08, "damping": 0.6, "predelay_ms": 15.0, "width": 0.7},
        "delay": {"note": "1/8", "time_ms": 180.0, "feedback": 0.10, "mix": 0.04},
    },
    "ballad": {
        "doc": "Ballad: forward, warm and intimate, long soft reverb, gentle compression.",
        "vocal_to_backing_lu": 3.0,
        "duck_db": 1.5,
        "eq": {"low_shelf_hz": 200.0, "low_shelf_db": 1.0, "presence_hz": 3500.0, "presence_db": 0.5,
               "air_hz": 11000.0, "air_db": 1.0},
        "compressor": {"ratio": 3.0, "target_gr_db": 3.5, "attack_ms": 10.0, "release_ms": 120.0},
        "deesser": {"target_reduction_db": 5.0, "max_reduction_db": 8.0, "ratio": 4.0,
                    "attack_ms": 1.0, "release_ms": 70.0},
        "reverb": {"room_size": 0.85, "wet_level": 0.09, "damping": 0.55, "predelay_ms": 40.0, "width": 1.0},
        "delay": {"note": "1/4", "time_ms": 500.0, "feedback": 0.20, "mix": 0.06},
    },
}

# --------------------------------------------------------------------------------------------
# Semantic sliders, each in -1...+1 (0 = the preset as is). "maps_to" lists the parameter
# changes at the +1 and -1 ends; between, changes scale linearly with the slider value.
# warmth follows the crowd-sourced SocialEQ descriptors (Cartwright & Pardo 2013): "warm" lifts
# below ~400 Hz with a peak near 120-160 Hz and dips around 1-2 kHz; "bright" cuts the lows and
# lifts 1.5-6 kHz, peaking near 4.4 kHz. tuning/ornaments steer the pitch correction (they do not
# change the vocal chain; melisma.render.pitch.correction_from_sliders turns them into its settings).
# --------------------------------------------------------------------------------------------
SLIDERS: dict[str, dict[str, Any]] = {
    "warmth": {
        "range": (-1.0, 1.0), "low": "brighter", "high": "warmer",
        "maps_to": {
            "+1": [{"type": "peak", "freq_hz": 140.0, "gain_db": 4.0, "q": 0.7},
                   {"type": "peak", "freq_hz": 1500.0, "gain_db": -2.5, "q": 1.0},
                   {"type": "peak", "freq_hz": 4400.0, "gain_db": -1.5, "q": 0.8}],
            "-1": [{"type": "low_shelf", "freq_hz": 250.0, "gain_db": -3.0, "q": 0.7},
                   # keyed: backs off on esses (render/lift.py), so brighter does not undo the de-esser
                   {"type": "keyed_peak", "freq_hz": 4400.0, "gain_db": 4.5, "q": 0.6}],
        },
        "doc": "Tone of the vocal. Warm: more body around 140 Hz, less 1.5 kHz honk and 4.4 kHz edge. "
               "Bright: thinner lows, more 1.5-6 kHz presence on sung sounds, none added to esses (SocialEQ 'warm'/'bright').",
    },
    "air": {
        "range": (-1.0, 1.0), "low": "darker top", "high": "more air",
        "maps_to": {"+1": [{"type": "high_shelf", "freq_hz": 11000.0, "gain_db": 4.0, "q": 0.7}],
                    "-1": [{"type": "high_shelf", "freq_hz": 11000.0, "gain_db": -4.0, "q": 0.7}]},
        "doc": "High shelf at 11 kHz, +/-4 dB: breath and sheen above the sibilance band.",
    },
    "reverb": {
        "range": (-1.0, 1.0), "low": "drier", "high": "wetter",
        "maps_to": {"+1": {"reverb_send_db": 6.0, "room_size": 0.15, "predelay_ms": 10.0, "delay_send_db": 6.0},
                    "-1": {"reverb_send_db": -12.0, "room_size": -0.15, "predelay_ms": -10.0, "delay_send_db": -12.0}},
        "doc": "Amount and size of the space around the vocal: reverb and echo sends in dB (-1 is close "
               "to dry, +1 doubles the send), Freeverb room size, pre-delay.",
    },
    "vocal_level": {
        "range": (-1.0, 1.0), "low": "back", "high": "forward",
        "maps_to": {"+1": {"vocal_to_backing_lu": 3.0, "duck_db": 1.0},
                    "-1": {"vocal_to_backing_lu": -3.0, "duck_db": -1.0}},
        "doc": "Where the vocal sits against the backing: LU added to the vocal-to-backing loudness "
               "target, and dB added to the backing's dip under the vocal (never below 0).",
    },
    "tuning": {
        "range": (-1.0, 1.0), "low": "natural", "high": "tight",
        "maps_to": "pitch correction: how far note centres move, 0 at -1, 0.8 at 0 (the default), 1 at +1",
        "doc": "Strength of the ornament-aware pitch correction (melisma.render.correct); an explicit "
               "--correction wins over it.",
    },
    "ornaments": {
        "range": (-1.0, 1.0), "low": "keep", "high": "soften",
        "maps_to": "pitch correction: ornaments kept as sung up to 0, their swing scaled down to 0.5 at +1",
        "doc": "How much of vibrato, slides, grace notes and trills the correction keeps; an explicit "
               "--ornaments policy wins over it.",
    },
}

#: Limits on what the sliders can push the reverb to (Freeverb parameters are 0...1).
_ROOM_SIZE_RANGE = (0.0, 0.98)
_PREDELAY_MS_RANGE = (0.0, 120.0)


def _from_mapping(cls: type, data: Any, what: str) -> Any:
    """A settings dataclass from a plain mapping: every field required, unknown keys refused."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a dict, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(f"unknown {what} setting(s) {unknown}; valid keys are {names}")
    missing = [f.name for f in fields(cls) if f.name not in data and f.default is MISSING]
    if missing:
        raise ConfigError(f"{what} settings lack {missing}; a complete set has {names}")
    return cls(**copy.deepcopy(data))


@dataclass
class CompressorSettings:
    """The vocal compressor; ``threshold_db`` is ``None`` until the take's analysis sets it."""

    ratio: float
    target_gr_db: float
    attack_ms: float
    release_ms: float
    threshold_db: float | None = None


@dataclass
class DeEsserSettings:
    """The de-esser; threshold and band are ``None`` until the take's analysis sets them."""

    target_reduction_db: float
    max_reduction_db: float
    ratio: float
    attack_ms: float
    release_ms: float
    threshold_db: float | None = None
    lo_hz: float | None = None
    hi_hz: float | None = None


@dataclass
class ReverbSettings:
    """Freeverb parameters (0…1) and the pre-delay before it."""

    room_size: float
    wet_level: float
    damping: float
    predelay_ms: float
    width: float


@dataclass
class DelaySettings:
    """The echo: a note value at the backing's tempo, or ``time_ms`` when the tempo is unknown."""

    note: str
    time_ms: float
    feedback: float
    mix: float


@dataclass
class EqBand:
    """One EQ band: ``type`` is low_shelf, high_shelf, peak, highpass or keyed_peak (a peak that
    backs off on esses: :class:`melisma.render.lift.SibilanceKeyedEQ`).
    """

    type: str
    freq_hz: float
    gain_db: float
    q: float


@dataclass
class MixSettings:
    """Render settings of the vocal chain and the balance, in physical units.

    ``eq_bands`` is the tonal EQ (preset tilt + sliders), applied after the compressor;
    corrective EQ from the analysis (high-pass, mud cut) is added by the chain builder.
    The compressor's and de-esser's thresholds (and the de-esser's band) are ``None`` until the
    analysis of the take fills them in. Every stage's parameters are typed: a preset or a plan
    that lacks one is refused, there are no fallback values.
    """

    style: str
    sliders: dict[str, float]
    vocal_to_backing_lu: float
    eq_bands: list[EqBand]
    compressor: CompressorSettings
    deesser: DeEsserSettings
    reverb: ReverbSettings
    delay: DelaySettings
    duck_db: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (for the plan and the mix report)."""
        return copy.deepcopy(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MixSettings:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`ConfigError`."""
        plain = _from_mapping(_PlainMix, data, "mix")
        if not isinstance(plain.eq_bands, list):
            raise ConfigError(f"mix eq_bands must be a list of bands, got {type(plain.eq_bands).__name__}")
        return cls(
            style=_check_style(plain.style), sliders=check_sliders(plain.sliders),
            vocal_to_backing_lu=float(plain.vocal_to_backing_lu),
            eq_bands=[_from_mapping(EqBand, b, "EQ band") for b in plain.eq_bands],
            compressor=_from_mapping(CompressorSettings, plain.compressor, "compressor"),
            deesser=_from_mapping(DeEsserSettings, plain.deesser, "de-esser"),
            reverb=_from_mapping(ReverbSettings, plain.reverb, "reverb"),
            delay=_from_mapping(DelaySettings, plain.delay, "delay"),
            duck_db=float(plain.duck_db),
        )


@dataclass
class _PlainMix:
    """MixSettings' fields as they arrive from JSON, before each is typed."""

    style: Any
    sliders: Any
    vocal_to_backing_lu: Any
    eq_bands: Any
    compressor: Any
    deesser: Any
    reverb: Any
    delay: Any
    duck_db: Any


def _check_style(style: Any) -> str:
    if not isinstance(style, str) or style not in STYLE_PRESETS:
        raise ConfigError(f"unknown style {style!r}; valid styles are {sorted(STYLE_PRESETS)}")
    return style


def check_sliders(sliders: dict[str, Any] | None) -> dict[str, float]:
    """Validate slider values: known names, real numbers, finite, within -1...+1.

    >>> check_sliders({"warmth": 0.5})
    {'warmth': 0.5}
    """
    if sliders is None:
        return {}
    if not isinstance(sliders, dict):
        raise ConfigError(f"sliders must be a dict of name -> number, got {type(sliders).__name__}")
    clean: dict[str, float] = {}
    for name, value in sliders.items():
        if name not in SLIDERS:
            raise ConfigError(f"unknown slider {name!r}; valid sliders are {sorted(SLIDERS)}")
        # bool is an int subclass; True as a slider value is almost certainly a bug upstream.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"slider {name!r} must be a number in -1...+1, got {value!r}")
        value = float(value)
        lo, hi = SLIDERS[name]["range"]
        if math.isnan(value) or not lo <= value <= hi:
            raise ConfigError(f"slider {name!r} = {value!r} is out of range; use a number in {lo:+g}...{hi:+g}")
        clean[name] = value
    return clean


def _scaled_bands(name: str, value: float) -> list[dict[str, Any]]:
    """EQ bands of an EQ slider at ``value``: the +1 or -1 curve scaled by |value|."""
    if value == 0.0:
        return []
    curve = SLIDERS[name]["maps_to"]["+1" if value > 0 else "-1"]
    return [{**band, "gain_db": round(band["gain_db"] * abs(value), 3)} for band in curve]


def _slider_deltas(name: str, value: float) -> dict[str, float]:
    """Parameter changes of a non-EQ slider at ``value``: the +1 or -1 end scaled by |value|."""
    if value == 0.0:
        return {}
    return {key: delta * abs(value) for key, delta in SLIDERS[name]["maps_to"]["+1" if value > 0 else "-1"].items()}


def _merge_bands(bands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sum gains of bands with the same type, frequency and Q; drop bands that end up flat."""
    merged: dict[tuple, dict[str, Any]] = {}
    for band in bands:
        key = (band["type"], float(band["freq_hz"]), float(band["q"]))
        if key in merged:
            merged[key]["gain_db"] = round(merged[key]["gain_db"] + band["gain_db"], 3)
        else:
            merged[key] = dict(band)
    return [b for b in merged.values() if b["type"] == "highpass" or abs(b["gain_db"]) >= 0.05]


def resolve_settings(style: str = "neutral", sliders: dict[str, Any] | None = None) -> MixSettings:
    """Combine a style preset and slider positions into :class:`MixSettings`.

    Parameters
    ----------
    style : str
        One of :data:`STYLE_PRESETS`.
    sliders : dict, optional
        Slider name -> value in -1...+1 (see :data:`SLIDERS`); missing sliders are 0.

    Raises
    ------
    ConfigError
        Unknown style or slider, a value that is not a number, NaN or out of range.

    Examples
    --------
    >>> s = resolve_settings("western", {"warmth": 1.0})
    >>> [b.freq_hz for b in s.eq_bands if b.type == "peak"][:2]
    [3500.0, 140.0]
    """
    style = _check_style(style)
    values = check_sliders(sliders)
    preset = copy.deepcopy(STYLE_PRESETS[style])
    get = lambda name: values.get(name, 0.0)  # noqa: E731

    eq = preset["eq"]
    bands = [
        {"type": "low_shelf", "freq_hz": eq["low_shelf_hz"], "gain_db": eq["low_shelf_db"], "q": 0.7},
        {"type": "peak", "freq_hz": eq["presence_hz"], "gain_db": eq["presence_db"], "q": 0.9},
        {"type": "high_shelf", "freq_hz": eq["air_hz"], "gain_db": eq["air_db"], "q": 0.7},
    ]
    bands += _scaled_bands("warmth", get("warmth"))
    bands += _scaled_bands("air", get("air"))

    reverb, delay = preset["reverb"], preset["delay"]
    wet = get("reverb")
    rev_map = _slider_deltas("reverb", wet)
    reverb["wet_level"] = round(reverb["wet_level"] * 10.0 ** (rev_map.get("reverb_send_db", 0.0) / 20.0), 4)
    reverb["room_size"] = round(min(max(reverb["room_size"] + rev_map.get("room_size", 0.0), _ROOM_SIZE_RANGE[0]),
                                    _ROOM_SIZE_RANGE[1]), 4)
    reverb["predelay_ms"] = round(min(max(reverb["predelay_ms"] + rev_map.get("predelay_ms", 0.0), _PREDELAY_MS_RANGE[0]),
                                      _PREDELAY_MS_RANGE[1]), 2)
    delay["mix"] = round(delay["mix"] * 10.0 ** (rev_map.get("delay_send_db", 0.0) / 20.0), 4)

    level_map = _slider_deltas("vocal_level", get("vocal_level"))
    return MixSettings(
        style=style,
        sliders={name: values.get(name, 0.0) for name in SLIDERS},
        vocal_to_backing_lu=round(preset["vocal_to_backing_lu"] + level_map.get("vocal_to_backing_lu", 0.0), 3),
        eq_bands=[EqBand(**band) for band in _merge_bands(bands)],
        compressor=CompressorSettings(**preset["compressor"]),
        deesser=DeEsserSettings(**preset["deesser"]),
        reverb=ReverbSettings(**reverb),
        delay=DelaySettings(**delay),
        duck_db=round(max(0.0, preset["duck_db"] + level_map.get("duck_db", 0.0)), 3),
    )


#: Rows of the preset table in firmware/docs/mixing.md: (label, key path, unit).
_PRESET_ROWS = [
    ("vocal-to-backing", ("vocal_to_backing_lu",), "LU"),
    ("backing dip under the vocal", ("duck_db",), "dB"),
    ("low shelf 200 Hz", ("eq", "low_shelf_db"), "dB"),
    ("presence peak 3.5 kHz", ("eq", "presence_db"), "dB"),
    ("air shelf 11 kHz", ("eq", "air_db"), "dB"),
    ("compressor ratio", ("compressor", "ratio"), ":1"),
    ("gain reduction on loud phrases", ("compressor", "target_gr_db"), "dB"),
    ("compressor attack", ("compressor", "attack_ms"), "ms"),
    ("compressor release", ("compressor", "release_ms"), "ms"),
    ("de-esser reduction on a typical ess", ("deesser", "target_reduction_db"), "dB"),
    ("de-esser max reduction", ("deesser", "max_reduction_db"), "dB"),
    ("reverb room size", ("reverb", "room_size"), "0-1"),
    ("reverb wet level", ("reverb", "wet_level"), "0-1"),
    ("reverb damping", ("reverb", "damping"), "0-1"),
    ("reverb pre-delay", ("reverb", "predelay_ms"), "ms"),
    ("reverb width", ("reverb", "width"), "0-1"),
    ("delay note (at the backing's tempo)", ("delay", "note"), ""),
    ("delay time if tempo unknown", ("delay", "time_ms"), "ms"),
    ("delay feedback", ("delay", "feedback"), "0-1"),
    ("delay mix", ("delay", "mix"), "0-1"),
]


def preset_table_markdown() -> str:
    """The preset table as Markdown, exactly as in ``firmware/docs/mixing.md`` (a test checks)."""
    styles = list(STYLE_PRESETS)
    lines = ["| setting | unit | " + " | ".join(f"`{s}`" for s in styles) + " |",
             "|---|---|" + "---|" * len(styles)]
    for label, path, unit in _PRESET_ROWS:
        cells = []
        for style in styles:
            value: Any = STYLE_PRESETS[style]
            for key in path:
                value = value[key]
            cells.append(f"{value:g}" if isinstance(value, (int, float)) else str(value))
        lines.append(f"| {label} | {unit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def slider_table_markdown() -> str:
    """The slider table as Markdown, exactly as in ``firmware/docs/mixing.md`` (a test checks)."""

    def fmt(mapping: Any) -> str:
        if isinstance(mapping, list):
            return "; ".join(f"{b['type']} {b['freq_hz']:g} Hz {b['gain_db']:+g} dB (Q {b['q']:g})" for b in mapping)
        if isinstance(mapping, dict):
            return "; ".join(f"{k} {v:+g}" for k, v in mapping.items())
        return str(mapping)

    lines = ["| slider | -1 | +1 | at -1 | at +1 |", "|---|---|---|---|---|"]
    for name, spec in SLIDERS.items():
        maps = spec["maps_to"]
        if isinstance(maps, dict):
            low, high = fmt(maps["-1"]), fmt(maps["+1"])
        else:
            low = high = str(maps)
        lines.append(f"| `{name}` | {spec['low']} | {spec['high']} | {low} | {high} |")
    return "\n".join(lines)
