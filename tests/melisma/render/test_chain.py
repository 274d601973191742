"""The vocal chain: real processing of synthetic vocals, checked for what the settings promise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from melisma.analysis.voice import analyze_voice
from melisma.errors import RenderError
from melisma.render.chain import DeEsser, Space, build_vocal_chain, eq_response_db, render_vocal_chain
from melisma.render.stages import Chain
from melisma.semantic import STYLE_PRESETS, resolve_settings
from scipy import signal

SR = 48000


def synth_voice(*, seconds=4.0, f0=220.0, swing_db=10.0, sib_band=(6000.0, 8000.0), sib_db=-12.0, seed=0):
    """Harmonic vowels with vibrato, alternating loud and quiet (``swing_db`` apart) 0.75 s notes,
    each followed by a 120 ms band-limited noise burst (an "s"). Returns audio and sample masks."""
    rng = np.random.default_rng(seed)
    n = int(SR * seconds)
    t = np.arange(n) / SR
    phase = 2 * np.pi * np.cumsum(f0 * 2 ** ((0.5 / 12) * np.sin(2 * np.pi * 5.5 * t))) / SR
    vowel = np.zeros(n)
    for k in range(1, int(0.45 * SR / f0)):
        fk = f0 * k
        amp = k**-1.2 * (1 + 2 * np.exp(-0.5 * ((fk - 700) / 300) ** 2) + np.exp(-0.5 * ((fk - 2800) / 500) ** 2))
        vowel += amp * np.sin(k * phase)
    vowel /= np.abs(vowel).max()
    noise = signal.sosfilt(signal.butter(6, sib_band, btype="bandpass", fs=SR, output="sos"), rng.standard_normal(n))
    noise /= np.sqrt(np.mean(noise**2))
    env, sib = np.zeros(n), np.zeros(n)
    masks = {name: np.zeros(n, bool) for name in ("vowel", "sibilant", "loud", "quiet", "after_note")}
    note, burst, fade = int(0.75 * SR), int(0.12 * SR), int(0.02 * SR)
    for i, start in enumerate(range(0, n - SR + 1, SR)):
        gain = 10 ** ((-6.0 - (swing_db if i % 2 else 0.0)) / 20)
        shape = np.ones(note)
        shape[:fade], shape[-fade:] = np.linspace(0, 1, fade), np.linspace(1, 0, fade)
        env[start:start + note] = gain * shape
        body = slice(start + fade, start + note - fade)
        masks["vowel"][body] = True
        masks[("quiet" if i % 2 else "loud")][body] = True
        masks["after_note"][start + note:start + SR] = True
        s0 = start + note + int(0.05 * SR)
        sib[s0:s0 + burst] = 10 ** (sib_db / 20) * 0.3 * np.hanning(burst) * noise[s0:s0 + burst]
        masks["sibilant"][s0 + burst // 4:s0 + 3 * burst // 4] = True
    return (0.5 * env * vowel + sib).astype(np.float32), masks


@pytest.fixture(scope="module")
def vocal():
    y, masks = synth_voice()
    return y, masks, analyze_voice(y, sr=SR)


@pytest.fixture(scope="module")
def sung():
    """A vowel-only take (no bursts) for tone and space measurements."""
    y, masks = synth_voice(sib_db=-200.0, seconds=3.0)
    return y, masks, analyze_voice(y, sr=SR)


def energy_db(x, mask=None):
    x = np.asarray(x, dtype=np.float64)
    if mask is not None:
        x = x[..., mask]
    return 10 * np.log10(np.mean(x**2) + 1e-30)


def band_share_db(x, lo_hz, hi_hz):
    """Energy of lo_hz..hi_hz as a share of the whole signal (dB), both channels together."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    spectrum = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    sel = (freqs >= lo_hz) & (freqs < hi_hz)
    return 10 * np.log10(spectrum[:, sel].sum() / spectrum.sum())


def dry_part(chain: Chain) -> Chain:
    """Everything before the space (reverb/delay) stage."""
    assert isinstance(chain.stages[-1], Space)
    return Chain(list(chain.stages[:-1]))


def render(style, sliders, take, backing=None):
    y, _, info = take
    chain, why = build_vocal_chain(resolve_settings(style, sliders), info, backing, sr=SR)
    return chain(y, SR), chain, why


@pytest.mark.parametrize("style", sorted(STYLE_PRESETS))
def test_chain_and_every_stage_satisfy_the_stage_contract(style, vocal):
    y, _, info = vocal
    chain, why = build_vocal_chain(resolve_settings(style), info, {"tempo_bpm": 96.0}, sr=SR)
    out = chain(y, SR)
    assert out.shape == (2, y.size) and out.dtype == np.float32 and np.all(np.isfinite(out))
    split = y.size // 3 + 123  # not on any block boundary
    streamed = np.concatenate([chain(y[:split], SR), chain(y[split:], SR, reset=False)], axis=1)
    np.testing.assert_allclose(streamed, out, atol=1e-4)
    signal_in = y
    for stage in chain.stages:
        once = stage(signal_in, SR)
        assert once.dtype == np.float32 and np.all(np.isfinite(once)) and once.shape[-1] == y.size
        two = np.concatenate([stage(signal_in[..., :split], SR), stage(signal_in[..., split:], SR, reset=False)], axis=-1)
        np.testing.assert_allclose(two, once, atol=1e-4, err_msg=stage.name)
        signal_in = once
    # Explanations: one per decision, JSON-ready, each saying why.
    json.dumps(why, allow_nan=False)
    assert {w["stage"] for w in why} >= {"deesser", "highpass", "compressor", "tone_eq", "reverb", "delay"}
    assert all(w["why"] for w in why)


def test_deesser_shapes_and_transparency():
    rng = np.random.default_rng(3)
    stereo = (0.1 * rng.standard_normal((2, SR // 2))).astype(np.float32)
    quiet = DeEsser(lo_hz=5000, hi_hz=9000, threshold_db=0.0)  # never triggers
    out = quiet(stereo, SR)
    assert out.shape == stereo.shape and out.dtype == np.float32
    # Without reduction it is an all-pass: the same energy in every band.
    for lo, hi in ((100, 1000), (1000, 4000), (4000, 10000), (10000, 20000)):
        assert band_share_db(out, lo, hi) == pytest.approx(band_share_db(stereo, lo, hi), abs=0.1)
    assert DeEsser(lo_hz=5000, hi_hz=9000)(stereo[0], SR).shape == (SR // 2,)
    with pytest.raises(RenderError, match="lo_hz"):
        DeEsser(lo_hz=9000, hi_hz=5000)


def test_deesser_cuts_esses_by_several_db_and_leaves_vowels(vocal):
    y, masks, info = vocal
    assert 5000 <= info["sibilance"]["centre_hz"] <= 8500
    chain, why = build_vocal_chain(resolve_settings("neutral"), info, sr=SR)
    deesser = chain.stages[0]
    assert isinstance(deesser, DeEsser)
    out = deesser(y, SR)
    sib_change = energy_db(out, masks["sibilant"]) - energy_db(y, masks["sibilant"])
    vowel_change = energy_db(out, masks["vowel"]) - energy_db(y, masks["vowel"])
    assert sib_change < -3.0
    assert abs(vowel_change) < 1.0
    assert next(w for w in why if w["stage"] == "deesser")["expected_reduction_db"] >= 3.0


def test_no_deesser_without_sibilance(sung):
    _, _, info = sung
    chain, why = build_vocal_chain(resolve_settings("neutral"), info, sr=SR)
    assert not any(isinstance(s, DeEsser) for s in chain.stages)
    assert next(w for w in why if w["stage"] == "deesser")["enabled"] is False


@pytest.mark.parametrize("style", sorted(STYLE_PRESETS))
def test_compressor_gives_3_to_6_db_on_loud_phrases_only(style, sung):
    y, masks, info = sung
    settings = resolve_settings(style)
    chain, why = build_vocal_chain(settings, info, sr=SR)
    comp = next(w for w in why if w["stage"] == "compressor")
    settings_off = resolve_settings(style)
    settings_off.compressor.threshold_db = 0.0  # never compresses; everything else equal
    chain_off, why_off = build_vocal_chain(settings_off, info, sr=SR)
    assert next(w for w in why_off if w["stage"] == "compressor")["makeup_db"] == 0.0
    wet, dry = dry_part(chain)(y, SR), dry_part(chain_off)(y, SR)
    gr_loud = energy_db(dry, masks["loud"]) - energy_db(wet, masks["loud"]) + comp["makeup_db"]
    gr_quiet = energy_db(dry, masks["quiet"]) - energy_db(wet, masks["quiet"]) + comp["makeup_db"]
    assert 3.0 <= gr_loud <= 6.0, (style, gr_loud, comp)
    assert gr_quiet < 1.0
    assert gr_loud == pytest.approx(comp["expected_gr_db"], abs=1.5)


def test_compressor_target_holds_for_a_low_voice():
    # A low voice loses several dB to the high-pass before the compressor; the chain allows for it.
    y, masks = synth_voice(sib_db=-200.0, seconds=3.0, f0=98.0)
    info = analyze_voice(y, sr=SR)
    settings = resolve_settings("western")
    chain, why = build_vocal_chain(settings, info, sr=SR)
    off = resolve_settings("western")
    off.compressor.threshold_db = 0.0
    chain_off, _ = build_vocal_chain(off, info, sr=SR)
    makeup = next(w for w in why if w["stage"] == "compressor")["makeup_db"]
    gr_loud = energy_db(dry_part(chain_off)(y, SR), masks["loud"]) - energy_db(dry_part(chain)(y, SR), masks["loud"]) + makeup
    assert 3.0 <= gr_loud <= 6.0


def test_eq_response_model_matches_pedalboard():
    import pedalboard

    rng = np.random.default_rng(4)
    noise = (0.1 * rng.standard_normal(2 * SR)).astype(np.float32)
    bands = [{"type": "highpass", "freq_hz": 80.0, "gain_db": 0.0, "q": 0.7071},
             {"type": "peak", "freq_hz": 300.0, "gain_db": -3.0, "q": 1.0},
             {"type": "low_shelf", "freq_hz": 200.0, "gain_db": 4.0, "q": 0.7},
             {"type": "high_shelf", "freq_hz": 11000.0, "gain_db": -4.0, "q": 0.7}]
    board = pedalboard.Pedalboard([pedalboard.HighpassFilter(80.0), pedalboard.HighpassFilter(80.0),
                                   pedalboard.PeakFilter(300.0, -3.0, 1.0), pedalboard.LowShelfFilter(200.0, 4.0, 0.7),
                                   pedalboard.HighShelfFilter(11000.0, -4.0, 0.7)])
    out = board(noise[None, :], SR)[0]
    for lo, hi in ((40, 60), (250, 350), (120, 180), (14000, 18000), (2000, 3000)):
        measured = band_share_db(out, lo, hi) - band_share_db(noise, lo, hi) + energy_db(out) - energy_db(noise)
        centre = np.array([np.sqrt(lo * hi)])
        model = sum(eq_response_db(b, centre)[0] for b in bands)
        assert measured == pytest.approx(model, abs=1.0), (lo, hi)


def test_block_rendering_equals_one_call(vocal):
    y, _, info = vocal
    chain, _ = build_vocal_chain(resolve_settings("cpop"), info, {"tempo_bpm": 110.0}, sr=SR)
    whole = chain(y, SR)
    blocks = render_vocal_chain(chain, y, sr=SR, block_s=0.37)
    assert blocks.shape == whole.shape and blocks.dtype == np.float32
    np.testing.assert_allclose(blocks, whole, atol=1e-4)


def test_warmth_slider_moves_energy_the_way_people_mean(sung):
    shares = {}
    for warmth in (-1.0, 0.0, 1.0):
        out, _, _ = render("neutral", {"warmth": warmth, "reverb": -1.0}, sung)
        shares[warmth] = (band_share_db(out, 100, 300), band_share_db(out, 3000, 6000))
    low = {w: s[0] for w, s in shares.items()}
    presence = {w: s[1] for w, s in shares.items()}
    assert low[1.0] > low[0.0] + 1.0 > low[-1.0] + 2.0
    assert presence[1.0] < presence[0.0] - 1.0 < presence[-1.0] - 2.0


def test_air_slider_raises_the_top_octave(sung):
    tops = {air: band_share_db(render("neutral", {"air": air}, sung)[0], 10000, 20000) for air in (-1.0, 0.0, 1.0)}
    assert tops[1.0] > tops[0.0] + 2.0 > tops[-1.0] + 4.0


def test_reverb_slider_and_styles_change_the_wet_to_dry_energy(sung):
    _y, masks, _ = sung

    def tail_to_note_db(out):
        # Energy in the gaps after the notes end (reverb tail) against the energy of the notes.
        return energy_db(out, masks["after_note"]) - energy_db(out, masks["vowel"])

    tails = {wet: tail_to_note_db(render("ballad", {"reverb": wet}, sung)[0]) for wet in (-1.0, 0.0, 1.0)}
    assert tails[1.0] > tails[0.0] + 2.0 > tails[-1.0] + 4.0
    cpop = tail_to_note_db(render("cpop", None, sung)[0])
    western = tail_to_note_db(render("western", None, sung)[0])
    assert cpop > western + 3.0


def test_delay_follows_the_backing_tempo(sung):
    _y, _, info = sung
    _, why = build_vocal_chain(resolve_settings("cpop"), info, {"tempo_bpm": 120.0}, sr=SR)
    assert next(w for w in why if w["stage"] == "delay")["time_ms"] == pytest.approx(500.0)
    # An impulse comes back once per beat.
    chain, _ = build_vocal_chain(resolve_settings("cpop", {"reverb": 0.0}), info, {"tempo_bpm": 120.0}, sr=SR)
    space = chain.stages[-1]
    space._reverb = None  # listen to the echo alone
    impulse = np.zeros(SR, np.float32)
    impulse[100] = 1.0
    echo = space(impulse, SR)[0] - impulse
    assert 100 + SR // 2 - 200 < int(np.argmax(np.abs(echo))) < 100 + SR // 2 + 200


@pytest.mark.parametrize("delay_ms", [0.4, 125.0, 581.395])
def test_echo_is_pedalboards_delay_chain_to_the_bit_in_any_blocks(delay_ms):
    """The echo's feedback delay runs in numpy, a delay's worth at a time: the space gives the same
    samples as the dry voice plus pedalboard's Delay (fractional delays truncated as it does) and
    the echo's filters, streamed in blocks shorter and longer than the delay, and again after a reset."""
    import math

    import pedalboard

    rng = np.random.default_rng(3)
    x = (0.3 * rng.standard_normal(2 * SR)).astype(np.float32)
    echo = pedalboard.Pedalboard([
        pedalboard.Delay(delay_seconds=delay_ms / 1000.0, feedback=0.45, mix=1.0),
        pedalboard.HighpassFilter(cutoff_frequency_hz=300.0),
        pedalboard.LowpassFilter(cutoff_frequency_hz=6000.0),
        pedalboard.Gain(gain_db=20.0 * math.log10(0.5)),
    ])
    reference = np.stack([x, x]) + echo(x[None, :], SR, reset=True)
    space = Space(delay_ms=delay_ms, delay_feedback=0.45, delay_mix=0.5)
    for _ in range(2):  # the second pass starts fresh, as a new render does
        # the largest block first: pedalboard re-prepares (and so resets) its filters when a block
        # is larger than any before it, which real renders (equal blocks) never do
        pieces, start, sizes = [], 0, [40000, 7, 5000, 31, 1] * 40
        while start < x.size:
            size = sizes[len(pieces)]
            pieces.append(space(x[start : start + size], SR, reset=start == 0))
            start += size
        ours = np.concatenate(pieces, axis=1)
        assert np.array_equal(ours, reference)
    assert np.abs(reference - np.stack([x, x])).max() > 0.05  # the echo is there at all


def test_rumbly_take_gets_a_higher_highpass_and_masked_take_a_presence_lift(sung):
    y, _, info = sung
    _, why = build_vocal_chain(resolve_settings("neutral"), info, sr=SR)
    assert next(w for w in why if w["stage"] == "highpass")["freq_hz"] == 80.0
    rng = np.random.default_rng(5)
    wind = signal.sosfilt(signal.butter(2, 60, btype="lowpass", fs=SR, output="sos"), rng.standard_normal(y.size))
    rumbly = analyze_voice((y + 0.3 * wind).astype(np.float32), sr=SR)
    _, why = build_vocal_chain(resolve_settings("neutral"), rumbly, sr=SR)
    assert next(w for w in why if w["stage"] == "highpass")["freq_hz"] > 100
    # A low voice alone does not raise the corner.
    low_voice = analyze_voice(synth_voice(sib_db=-200.0, seconds=2.0, f0=98.0)[0], sr=SR)
    _, why = build_vocal_chain(resolve_settings("neutral"), low_voice, sr=SR)
    assert next(w for w in why if w["stage"] == "highpass")["freq_hz"] == 80.0
    backing = {"spectral_balance": {"presence": info["spectral_balance"]["presence"] + 6}}
    _, why = build_vocal_chain(resolve_settings("neutral"), info, backing, sr=SR)
    assert next(w for w in why if w["stage"] == "presence")["gain_db"] > 0


def test_corpus_vocal_runs_through_the_chain():
    from tools.corpus import voice as corpus
    notes = [corpus.NoteSpec(60 + i % 4, 0.2 + 0.7 * i, 0.55, consonant="s" if i % 2 == 0 else None,
                             velocity=0.9 if i % 2 else 0.5) for i in range(5)]
    take = corpus.synthesize_voice(notes, sr=SR, seed=2)
    info = analyze_voice(take.audio, sr=SR)
    chain, _why = build_vocal_chain(resolve_settings("cpop"), info, sr=SR)
    out = chain(take.audio, SR)
    assert out.shape == (2, take.audio.size) and np.all(np.isfinite(out))
    assert isinstance(chain.stages[0], DeEsser)
    # The esses come out quieter relative to the vowels than they went in.
    sib = np.zeros(take.audio.size, bool)
    for c in take.consonants:
        sib[int(c["start_s"] * SR):int(c["end_s"] * SR)] = True
    deessed = chain.stages[0](take.audio, SR)
    assert energy_db(deessed, sib) < energy_db(take.audio, sib) - 2.0
    assert abs(energy_db(deessed, ~sib) - energy_db(take.audio, ~sib)) < 1.0


def test_corpus_scenario_through_the_chain_with_its_backing():
    from melisma.analysis.voice import analyze_backing

    import tools.corpus as corpus

    scenario = corpus.make_scenario(seed=3, duration_s=6.0, sr=SR, backing_renderer="numpy")
    backing = analyze_backing(scenario.backing, sr=SR)
    chain, why = build_vocal_chain(resolve_settings("ballad", {"warmth": 0.5}), analyze_voice(scenario.clean_vocal, sr=SR),
                                   backing, sr=SR)
    out = render_vocal_chain(chain, scenario.clean_vocal, sr=SR, block_s=1.0)
    assert out.shape == (2, scenario.clean_vocal.size) and np.all(np.isfinite(out))
    delay = next(w for w in why if w["stage"] == "delay")
    assert delay["time_ms"] == pytest.approx(60000.0 / backing["tempo_bpm"], abs=0.1)  # a 1/4 note
