"""Streaming balance and master: the same results as the whole-array balance() and master()."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from melisma import audio_io
from melisma.analysis.loudness import CHUNK_SAMPLES, TruePeakMeter, integrated_lufs, true_peak_dbtp
from melisma.errors import RenderError
from melisma.render.balance import balance, balance_into
from melisma.render.master import master, master_stream

from .test_master import SR, music_like, sung_vocal

INPUTS = {
    "loud-clipped": lambda: np.clip(music_like(6) * 8, -1.0, 1.0),  # heavy limiting: needs a second pass
    "quiet": lambda: music_like(6, seed=2) * np.float32(0.01),
    "dynamic": lambda: music_like(6, seed=3, drums=0.4, dynamics=3.0),
}


@pytest.mark.parametrize("name", INPUTS)
def test_master_stream_matches_master(name: str) -> None:
    mix = INPUTS[name]()
    before = mix.copy()
    ref, ref_report = master(mix, sr=SR, target_lufs=-14.0)
    out = np.empty_like(mix)
    report = master_stream(mix, sr=SR, out=out, target_lufs=-14.0)
    assert np.array_equal(mix, before)  # the input is left alone
    measured = integrated_lufs(out, sr=SR)
    assert abs(measured - ref_report["integrated_lufs"]) <= 0.3 and abs(measured + 14.0) <= 0.3
    assert report["integrated_lufs"] == pytest.approx(measured, abs=1e-6)  # the on-the-fly meter is exact
    peak = true_peak_dbtp(out, sr=SR)
    assert peak <= -1.0 and report["true_peak_dbtp"] == pytest.approx(peak, abs=1e-6)
    assert report["mono"]["narrowed"] == ref_report["mono"]["narrowed"]
    # With master()'s tolerance the passes follow master()'s iteration: the same audio.
    tight = np.empty_like(mix)
    tight_report = master_stream(mix, sr=SR, out=tight, target_lufs=-14.0, tolerance_lu=0.1, max_passes=6)
    assert abs(tight_report["integrated_lufs"] - ref_report["integrated_lufs"]) <= 0.1
    if tight_report["passes"] == ref_report["iterations"]:
        assert np.abs(tight - ref).max() < 1e-6


def test_master_stream_into_a_writer_redoes_a_missed_pass(tmp_path: Path) -> None:
    mix = music_like(6, seed=3, drums=0.4)  # drum hits far above the rest: the limiter works hard
    path = tmp_path / "mix.wav"
    with audio_io.AudioWriter(path, sr=SR, channels=2, float_wav=True) as writer:
        report = master_stream(mix, sr=SR, writer=writer, target_lufs=-10.0)
    written, _ = audio_io.load_audio(path)
    assert written.shape == mix.shape
    assert report["passes"] >= 2  # the limiter takes loudness away, so the first pass falls short
    assert abs(integrated_lufs(written, sr=SR) + 10.0) <= 0.3
    assert true_peak_dbtp(written, sr=SR) <= -1.0
    assert report["integrated_lufs"] == pytest.approx(integrated_lufs(written, sr=SR), abs=1e-4)


class CountingWriter:
    """A writer that keeps the last pass and counts how much was encoded in all."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.samples_written = 0
        self.restarts = 0

    def write(self, block: np.ndarray) -> None:
        self.blocks.append(np.array(block))
        self.samples_written += block.shape[-1]

    def restart(self) -> None:
        self.blocks = []
        self.restarts += 1


def test_master_stream_encodes_at_most_twice_however_many_passes() -> None:
    mix = music_like(6, seed=3, drums=0.4)
    writer = CountingWriter()
    report = master_stream(mix, sr=SR, writer=writer, target_lufs=-10.0)
    assert report["passes"] >= 3  # a hard gain search ...
    assert writer.restarts == 1 and writer.samples_written == 2 * mix.shape[1]  # ... but two encodes
    out = np.concatenate(writer.blocks, axis=1)
    assert abs(integrated_lufs(out, sr=SR) + 10.0) <= 0.3
    t = np.arange(6 * SR) / SR
    gentle = np.stack([0.1 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    easy = CountingWriter()
    report = master_stream(gentle, sr=SR, writer=easy, target_lufs=-14.0)
    assert report["passes"] == 1 and easy.restarts == 0 and easy.samples_written == gentle.shape[1]  # one encode


def test_master_stream_narrows_a_mix_that_cancels_in_mono() -> None:
    rng = np.random.default_rng(0)
    left = (0.1 * rng.standard_normal(4 * SR)).astype(np.float32)
    mix = np.stack([left, -left + 0.02 * rng.standard_normal(4 * SR).astype(np.float32)])
    out = np.empty_like(mix)
    report = master_stream(mix, sr=SR, out=out)
    _, ref_report = master(mix, sr=SR)
    assert report["mono"]["narrowed"] and ref_report["mono"]["narrowed"]
    assert report["mono"]["side_gain"] == pytest.approx(ref_report["mono"]["side_gain"], abs=1e-3)
    assert report["mono"]["mono_loudness_drop_lu"] <= 3.05


def test_master_stream_refuses_bad_calls() -> None:
    mix = INPUTS["quiet"]()
    with pytest.raises(RenderError, match="exactly one"):
        master_stream(mix, sr=SR)
    with pytest.raises(RenderError, match="share memory"):
        master_stream(mix, sr=SR, out=mix)
    with pytest.raises(RenderError, match="silent"):
        master_stream(np.zeros_like(mix), sr=SR, out=np.empty_like(mix))


def test_true_peak_meter_equals_whole_signal_measurement() -> None:
    mix = INPUTS["loud-clipped"]() * np.float32(0.9)
    meter = TruePeakMeter(channels=2)
    pos = 0
    for size in [1, 17, 30000, 70000, 5] * 10:  # blocks smaller and larger than the interpolator's reach
        meter.add(mix[:, pos:pos + size])
        pos += size
    meter.add(mix[:, pos:])
    assert meter.dbtp == pytest.approx(true_peak_dbtp(mix, sr=SR), abs=1e-9)


# --------------------------------------------------------------------------------------------
# Balance


def _song(seconds: int = 6):
    active = (np.arange(seconds * SR) % SR < 0.7 * SR).astype(np.float32)
    return sung_vocal(seconds, active=active), music_like(seconds, seed=4)


@pytest.mark.parametrize("duck_db", [0.0, 3.0])
@pytest.mark.parametrize("in_place", [False, True])
def test_balance_into_equals_balance_then_sum(duck_db: float, in_place: bool) -> None:
    vocal, backing = _song()
    vp, bp, ref = balance(vocal, backing, sr=SR, vocal_to_backing_lu=1.5, duck_db=duck_db)
    expected = vp + bp
    work = vocal.copy()
    mix, report = balance_into(work, backing, sr=SR, vocal_to_backing_lu=1.5, duck_db=duck_db,
                               out=work if in_place else None, block_samples=50000)
    assert (mix is work) == in_place
    assert np.abs(mix - expected).max() < 1e-5
    for key in ("vocal_to_backing_lu", "vocal_gain_db", "vocal_lufs", "backing_lufs", "duck_db_max",
                "duck_active_fraction", "duck_backing_change_lu"):
        assert report[key] == pytest.approx(ref[key], abs=1e-6), key


def test_balance_into_reads_the_backing_from_a_npy_file(tmp_path: Path) -> None:
    vocal, backing = _song()
    path = tmp_path / "backing.npy"
    np.save(path, backing[:, : backing.shape[1] - 1000])  # shorter: the reader pads with zeros
    padded = backing.copy()
    padded[:, -1000:] = 0.0
    vp, bp, ref = balance(vocal, padded, sr=SR, vocal_to_backing_lu=0.0, duck_db=2.0)
    with audio_io.NpyBlockReader(path) as reader:
        reader_shape = (2, vocal.shape[1])  # the pipeline pads the backing to the take's length
        reader.shape = reader_shape
        mix, report = balance_into(vocal.copy(), reader, sr=SR, vocal_to_backing_lu=0.0, duck_db=2.0,
                                   backing_lufs=integrated_lufs(padded, sr=SR))
    assert np.abs(mix - (vp + bp)).max() < 1e-5
    assert report["vocal_to_backing_lu"] == pytest.approx(ref["vocal_to_backing_lu"], abs=1e-6)


@pytest.mark.parametrize("in_place", [False, True])
def test_balance_into_with_ducking_moments_places_the_vocal_as_metering_the_ducked_backing_does(in_place: bool,
                                                                                                 tmp_path: Path) -> None:
    """The ducked backing's loudness from the backing's moments and the cut curve (one pass over the
    backing) is what metering the ducked backing gives, to well under 0.001 LU; the mix and the
    ducking report match."""
    from melisma.render.balance import ducking_moments

    vocal, backing = _song()
    raw = integrated_lufs(backing, sr=SR)
    ref_work = vocal.copy()
    ref_mix, ref = balance_into(ref_work, backing, sr=SR, vocal_to_backing_lu=1.5, duck_db=3.0,
                                out=ref_work if in_place else None, backing_lufs=raw)
    moments = ducking_moments(backing, sr=SR, block_samples=40000)  # other blocks than the render's: the same sums
    assert moments.shape == (6, -(-backing.shape[1] // 32))
    work = vocal.copy()
    mix, report = balance_into(work, backing, sr=SR, vocal_to_backing_lu=1.5, duck_db=3.0,
                               out=work if in_place else None, backing_lufs=raw, duck_moments=moments)
    assert ref["duck_backing_change_lu"] < -0.05  # the dip is real, not a no-op
    for key in ("vocal_gain_db", "backing_lufs", "duck_backing_change_lu", "vocal_to_backing_lu"):
        assert report[key] == pytest.approx(ref[key], abs=1e-3), key
    assert report["duck_db_max"] == ref["duck_db_max"]
    assert report["duck_active_fraction"] == ref["duck_active_fraction"]
    assert np.abs(mix - ref_mix).max() < 1e-4
    with pytest.raises(RenderError, match="duck_moments"):
        balance_into(vocal.copy(), backing, sr=SR, vocal_to_backing_lu=1.5, duck_db=3.0, backing_lufs=raw,
                     duck_moments=moments[:, :-3])
    # kept in a file and read back in blocks (a long take's are never loaded whole): the same placement
    path = tmp_path / "duck.npy"
    with audio_io.NpyWriter(path, channels=moments.shape[0]) as writer:
        writer.append(moments)
    with audio_io.NpyBlockReader(path) as reader:
        _, from_file = balance_into(vocal.copy(), backing, sr=SR, vocal_to_backing_lu=1.5, duck_db=3.0, backing_lufs=raw,
                                    duck_moments=reader)
    assert from_file["vocal_gain_db"] == report["vocal_gain_db"]


def test_ducker_control_curve_is_the_curve_processing_applies() -> None:
    from melisma.render.ducker import Ducker

    vocal, backing = _song()
    streamed = Ducker(duck_db=3.0, sidechain=vocal, threshold_db=-40.0)
    streamed._controls = []
    for a in range(0, backing.shape[1], 30000):
        streamed(backing[:, a : a + 30000], SR, reset=False)
    curve = Ducker(duck_db=3.0, sidechain=vocal, threshold_db=-40.0)
    cuts = curve.control_curve(backing.shape[1], SR, channels=2)
    np.testing.assert_allclose(cuts, np.concatenate(streamed._controls), rtol=1e-12, atol=1e-15)  # BLAS rounding
    assert curve.max_dip_db == streamed.max_dip_db > 2.9


@pytest.mark.parametrize("fed", [True, False], ids=["peak-measured-by-the-caller", "peak-left-to-the-master"])
@pytest.mark.parametrize("peaky", [False, True])
def test_a_mix_the_limiter_would_not_touch_is_gained_and_read_from_its_meters(peaky: bool, fed: bool,
                                                                              monkeypatch) -> None:
    """With the mix's peak meter (already fed with the mix, or empty for the master to feed) a pass
    that reaches no ceiling skips the limiter and the output meters: the same samples, the same figures
    to 1e-5; a peaky mix is still limited, and an empty meter is then never fed (its sample peak
    alone rules the shortcut out)."""
    from melisma.analysis.loudness import LoudnessMeter

    vocal, backing = _song()
    if not peaky:
        backing = np.clip(backing * 6.0, -1.0, 1.0)  # a brickwalled backing: at -14 LUFS its peaks stay low
    meter = LoudnessMeter(SR, channels=2, stereo=True)
    peak = TruePeakMeter(channels=2)
    mix, _ = balance_into(vocal.copy(), backing, sr=SR, vocal_to_backing_lu=1.0, duck_db=2.0, mix_meter=meter)
    if fed:  # a caller that already measured the mix's true peak, in the chunks the master uses
        for a in range(0, mix.shape[1], CHUNK_SAMPLES):
            peak.add(mix[:, a : a + CHUNK_SAMPLES])
        assert peak.dbtp == pytest.approx(true_peak_dbtp(mix, sr=SR), abs=1e-9)
    plain, with_peak = np.empty_like(mix), np.empty_like(mix)
    ref = master_stream(mix, sr=SR, out=plain, target_lufs=-14.0)
    if not peaky:  # the limiter must not even run
        from melisma.render import limiter

        monkeypatch.setattr(limiter.TruePeakLimiter, "process", lambda *a, **k: pytest.fail("the limiter ran"))
    fast = master_stream(mix, sr=SR, out=with_peak, target_lufs=-14.0, meter=meter, peak_meter=peak)
    assert (ref["limiter_max_gr_db"] > 0.5) == peaky
    if peaky:  # the limiter ran as before
        assert np.abs(with_peak - plain).max() < 1e-6
    else:
        assert np.array_equal(with_peak, plain)
    for key in ("integrated_lufs", "true_peak_dbtp", "sample_peak_dbfs", "gain_db", "limiter_max_gr_db"):
        assert fast[key] == pytest.approx(ref[key], abs=1e-5), key
    assert fast["mono"]["mono_loudness_drop_lu"] == pytest.approx(ref["mono"]["mono_loudness_drop_lu"], abs=1e-5)
    assert fast["integrated_lufs"] == pytest.approx(integrated_lufs(with_peak, sr=SR), abs=1e-5)
    assert fast["true_peak_dbtp"] == pytest.approx(true_peak_dbtp(with_peak, sr=SR), abs=1e-5)
    if not fed:  # fed by the master only when the shortcut was possible, then exactly the mix
        assert peak.n_samples == (0 if peaky else mix.shape[1])
        if not peaky:
            assert peak.dbtp == pytest.approx(true_peak_dbtp(mix, sr=SR), abs=1e-9)
    with pytest.raises(RenderError, match="peak meter"):
        master_stream(mix, sr=SR, out=np.empty_like(mix), peak_meter=peak)  # without the loudness meter


def test_balance_into_refuses_silence_and_mismatch() -> None:
    vocal, backing = _song()
    with pytest.raises(RenderError, match="vocal is silent"):
        balance_into(np.zeros_like(vocal), backing, sr=SR, vocal_to_backing_lu=0.0)
    with pytest.raises(RenderError, match="backing is silent"):
        balance_into(vocal, np.zeros_like(backing), sr=SR, vocal_to_backing_lu=0.0)
    with pytest.raises(RenderError, match="same length"):
        balance_into(vocal, backing[:, :-5], sr=SR, vocal_to_backing_lu=0.0)


@pytest.mark.parametrize("duck_db", [0.0, 3.0])
def test_the_master_starts_from_the_meter_balance_into_fed_and_gets_the_same_bits(duck_db: float) -> None:
    from melisma.analysis.loudness import LoudnessMeter
    from melisma.render.master import measure_mix

    vocal, backing = _song()
    mix, _ = balance_into(vocal.copy(), backing, sr=SR, vocal_to_backing_lu=1.0, duck_db=duck_db)
    meter = LoudnessMeter(SR, channels=2, stereo=True)
    fed, _ = balance_into(vocal.copy(), backing, sr=SR, vocal_to_backing_lu=1.0, duck_db=duck_db, mix_meter=meter)
    assert np.array_equal(fed, mix)
    own = measure_mix(mix, SR)
    assert np.array_equal(meter.hops.sums, own.hops.sums) and np.array_equal(meter.hops.cross, own.hops.cross)
    assert meter.correlation == own.correlation
    out_a, out_b = np.empty_like(mix), np.empty_like(mix)
    report_a = master_stream(mix, sr=SR, out=out_a, target_lufs=-12.0)
    report_b = master_stream(mix, sr=SR, out=out_b, target_lufs=-12.0, meter=meter)
    assert np.array_equal(out_a, out_b) and report_a == report_b


def test_a_meter_of_another_signal_is_refused() -> None:
    from melisma.analysis.loudness import LoudnessMeter

    vocal, backing = _song()
    mix, _ = balance_into(vocal.copy(), backing, sr=SR, vocal_to_backing_lu=1.0)
    short = LoudnessMeter(SR, channels=2, stereo=True)
    short.add(mix[:, :1000])
    with pytest.raises(RenderError, match="meter measured 1000 samples"):
        master_stream(mix, sr=SR, out=np.empty_like(mix), meter=short)
    used = LoudnessMeter(SR, channels=2, stereo=True)
    used.add(mix[:, :10])
    with pytest.raises(RenderError, match="mix_meter must be a new LoudnessMeter"):
        balance_into(vocal.copy(), backing, sr=SR, vocal_to_backing_lu=1.0, mix_meter=used)
