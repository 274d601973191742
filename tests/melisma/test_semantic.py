"""Style presets and semantic sliders: tables, directions, validation, serialisation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from melisma.errors import ConfigError
from melisma.semantic import (
    SLIDERS,
    STYLE_PRESETS,
    MixSettings,
    preset_table_markdown,
    resolve_settings,
    slider_table_markdown,
)

DOC = Path(__file__).resolve().parents[2] / "firmware" / "docs" / "mixing.md"


def test_required_presets_and_sliders_exist():
    assert {"cpop", "western", "ballad", "neutral"} <= set(STYLE_PRESETS)
    assert {"warmth", "reverb", "vocal_level", "air", "tuning", "ornaments"} <= set(SLIDERS)
    for spec in SLIDERS.values():
        assert spec["range"] == (-1.0, 1.0) and spec["low"] and spec["high"] and spec["doc"]


def test_cpop_is_wetter_and_more_forward_than_western():
    cpop, western = resolve_settings("cpop"), resolve_settings("western")
    assert cpop.vocal_to_backing_lu > western.vocal_to_backing_lu
    assert cpop.reverb.wet_level > western.reverb.wet_level
    assert cpop.reverb.room_size > western.reverb.room_size
    assert cpop.delay.mix > western.delay.mix
    # Modern Western pop: about +1 LU lead-to-accompaniment (Gerdes & Siedenburg 2023).
    assert western.vocal_to_backing_lu == pytest.approx(1.0, abs=0.5)


def test_every_preset_compresses_like_typical_vocal_practice():
    for style in STYLE_PRESETS:
        comp = resolve_settings(style).compressor
        assert 3.0 <= comp.ratio <= 4.0, style
        assert 3.0 <= comp.target_gr_db <= 6.0, style
        assert comp.threshold_db is None  # set from the take's analysis


def _band_gain(settings: MixSettings, kind: str, lo_hz: float, hi_hz: float) -> float:
    return sum(b.gain_db for b in settings.eq_bands if b.type == kind and lo_hz <= b.freq_hz <= hi_hz)


def test_warmth_slider_matches_the_words():
    warm, neutral, bright = (resolve_settings("neutral", {"warmth": v}) for v in (1.0, 0.0, -1.0))
    assert neutral.eq_bands == []  # the neutral preset is flat
    # Warm: lift near 120-160 Hz, dip around 1-2 kHz.
    assert _band_gain(warm, "peak", 100, 200) > 2.0
    assert _band_gain(warm, "peak", 1000, 2000) < -1.0
    # Bright: cut the lows, lift presence peaking near 4.4 kHz (keyed: it backs off on esses, render/lift.py).
    assert _band_gain(bright, "low_shelf", 100, 400) < -1.0
    assert _band_gain(bright, "keyed_peak", 3000, 6000) > 2.0
    half = resolve_settings("neutral", {"warmth": 0.5})
    assert _band_gain(half, "peak", 100, 200) == pytest.approx(0.5 * _band_gain(warm, "peak", 100, 200))


def test_air_reverb_and_vocal_level_sliders_move_the_right_way():
    base = resolve_settings("ballad")
    more_air = resolve_settings("ballad", {"air": 1.0})
    less_air = resolve_settings("ballad", {"air": -1.0})
    assert _band_gain(more_air, "high_shelf", 9000, 13000) > _band_gain(base, "high_shelf", 9000, 13000) + 3
    assert _band_gain(less_air, "high_shelf", 9000, 13000) < _band_gain(base, "high_shelf", 9000, 13000) - 3

    wet, dry = resolve_settings("ballad", {"reverb": 1.0}), resolve_settings("ballad", {"reverb": -1.0})
    assert dry.reverb.wet_level < base.reverb.wet_level < wet.reverb.wet_level
    assert dry.reverb.room_size < base.reverb.room_size < wet.reverb.room_size <= 1.0
    assert dry.delay.mix < base.delay.mix < wet.delay.mix

    fwd, back = resolve_settings("ballad", {"vocal_level": 1.0}), resolve_settings("ballad", {"vocal_level": -1.0})
    assert fwd.vocal_to_backing_lu - base.vocal_to_backing_lu == pytest.approx(3.0)
    assert back.vocal_to_backing_lu - base.vocal_to_backing_lu == pytest.approx(-3.0)
    assert back.duck_db >= 0.0 and fwd.duck_db > base.duck_db


def test_correction_sliders_steer_the_correction_not_the_chain():
    from melisma.render.pitch import correction_from_sliders

    plain = resolve_settings("cpop")
    tuned = resolve_settings("cpop", {"tuning": 0.7, "ornaments": 0.6})
    assert tuned.sliders["tuning"] == 0.7 and tuned.sliders["ornaments"] == 0.6
    assert tuned.eq_bands == plain.eq_bands and tuned.reverb == plain.reverb
    assert all("reserved" not in spec for spec in SLIDERS.values())
    neutral, tight = correction_from_sliders(plain.sliders), correction_from_sliders(tuned.sliders)
    assert tight.correction > neutral.correction
    assert tight.ornaments != neutral.ornaments


@pytest.mark.parametrize(
    ("style", "sliders", "needle"),
    [
        ("kpop", None, "'kpop'"),
        ("neutral", {"wetness": 0.5}, "'wetness'"),
        ("neutral", {"warmth": float("nan")}, "nan"),
        ("neutral", {"warmth": 1.5}, "1.5"),
        ("neutral", {"reverb": -1.01}, "-1.01"),
        ("neutral", {"air": "high"}, "'high'"),
        ("neutral", {"air": True}, "True"),
        ("neutral", {"air": math.inf}, "inf"),
        (None, None, "None"),
    ],
)
def test_bad_input_raises_config_error_naming_value_and_choices(style, sliders, needle):
    with pytest.raises(ConfigError) as info:
        resolve_settings(style, sliders)
    message = str(info.value)
    assert needle in message
    # ... and says what would work.
    assert "cpop" in message or "warmth" in message or "-1" in message


def test_settings_round_trip_through_json():
    settings = resolve_settings("cpop", {"warmth": -0.3, "reverb": 0.4, "vocal_level": 0.2, "air": 0.5})
    data = json.loads(json.dumps(settings.to_dict()))
    again = MixSettings.from_dict(data)
    assert again == settings
    with pytest.raises(ConfigError, match="bogus"):
        MixSettings.from_dict({**data, "bogus": 1})
    # every stage's parameters are required: no silent fallback values
    with pytest.raises(ConfigError, match="ratio"):
        MixSettings.from_dict({**data, "compressor": {k: v for k, v in data["compressor"].items() if k != "ratio"}})
    with pytest.raises(ConfigError, match="reverb"):
        MixSettings.from_dict({**data, "reverb": [0.5]})


def test_semantic_imports_nothing_heavy():
    code = ("import sys, melisma.semantic; heavy = [m for m in ('numpy', 'scipy', 'pedalboard') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_mirror_the_tables():
    text = DOC.read_text(encoding="utf-8")
    assert preset_table_markdown() in text, "regenerate the preset table in firmware/docs/mixing.md"
    assert slider_table_markdown() in text, "regenerate the slider table in firmware/docs/mixing.md"


def test_protocol_mirrors_the_sliders_and_styles_declared_here():
    # protocol.py imports nothing from the engine (the phone build uses it alone), so it repeats the
    # names; this is the check that the two declarations agree.
    from melisma import protocol

    assert set(protocol.SLIDER_NAMES) == set(SLIDERS)
    assert {s.engine_name for s in protocol.Style} == set(STYLE_PRESETS)
    for name in protocol.SLIDER_NAMES:
        assert SLIDERS[name]["range"] == (-1.0, 1.0)  # the wire carries -100..100 hundredths
