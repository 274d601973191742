"""audio_io: decoding what phones produce, resampling, and atomic writes that never clobber."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
from melisma import audio_io
from melisma.errors import AudioContentError, AudioIOError, DecodeError, MelismaError, OutputExistsError

SR = 48000


def tone(seconds: float = 1.0, sr: int = SR, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([y * (0.5 + 0.5 * c / max(channels - 1, 1)) for c in range(channels)]) if channels > 1 else y


def dominant_hz(y: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / sr)[np.argmax(spec)])


@pytest.mark.parametrize("ext", [".wav", ".flac", ".m4a", ".mp3", ".ogg"])
def test_round_trip_keeps_pitch_level_and_channels(tmp_path: Path, ext: str) -> None:
    y = tone(1.0, channels=2)
    path = tmp_path / f"t{ext}"
    audio_io.write_audio(path, y, sr=SR)
    z, sr = audio_io.load_audio(path)
    assert sr == SR and z.shape[0] == 2 and z.dtype == np.float32
    assert abs(z.shape[1] - SR) < 0.05 * SR
    mid = z[0, SR // 4 : 3 * SR // 4]
    assert abs(dominant_hz(mid, SR) - 440.0) < 3.0
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.3 / np.sqrt(2) * 0.5, rel=0.1)


def test_lossless_formats_are_exact_to_24_bits(tmp_path: Path) -> None:
    y = tone(0.5)
    for ext in (".wav", ".flac"):
        audio_io.write_audio(tmp_path / f"x{ext}", y, sr=SR)
        z, _ = audio_io.load_audio(tmp_path / f"x{ext}", mono=True)
        assert np.max(np.abs(z - y)) < 2e-7


def test_mono_and_resample(tmp_path: Path) -> None:
    audio_io.write_audio(tmp_path / "s.flac", tone(1.0, channels=2), sr=SR)
    z, sr = audio_io.load_audio(tmp_path / "s.flac", sr=16000, mono=True)
    assert sr == 16000 and z.shape == (16000,)
    assert abs(dominant_hz(z, 16000) - 440.0) < 3.0


def test_resampler_is_band_limited() -> None:
    # A 20 kHz tone must vanish when going to 16 kHz (a naive interpolator would alias it to 4 kHz).
    y = (0.5 * np.sin(2 * np.pi * 20000 * np.arange(SR) / SR)).astype(np.float32)
    z = audio_io.resample(y, orig_sr=SR, target_sr=16000)
    assert np.sqrt(np.mean(z[1000:-1000] ** 2)) < 1e-3


def test_unusual_rates_and_channel_counts(tmp_path: Path) -> None:
    scipy.io.wavfile.write(tmp_path / "low.wav", 8000, (tone(1.0, sr=8000) * 32767).astype(np.int16))
    z, sr = audio_io.load_audio(tmp_path / "low.wav", sr=SR, mono=True)
    assert sr == SR and abs(len(z) - SR) < 10 and abs(dominant_hz(z, SR) - 440) < 3
    eight = np.stack([tone(0.5, sr=192000, freq=220.0 * (c + 1)) for c in range(8)], axis=1)
    scipy.io.wavfile.write(tmp_path / "many.wav", 192000, eight)
    z, sr = audio_io.load_audio(tmp_path / "many.wav")
    assert sr == 192000 and z.shape == (8, 96000)
    assert abs(dominant_hz(z[3], sr) - 880.0) < 5


def test_missing_empty_directory_and_garbage_are_decode_errors(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="no such file"):
        audio_io.load_audio(tmp_path / "nope.m4a")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DecodeError, match="empty"):
        audio_io.load_audio(tmp_path / "empty.wav")
    with pytest.raises(DecodeError, match="directory"):
        audio_io.load_audio(tmp_path)
    (tmp_path / "fake.m4a").write_bytes(os.urandom(20000))
    with pytest.raises(DecodeError, match=r"fake.m4a"):
        audio_io.load_audio(tmp_path / "fake.m4a")
    (tmp_path / "notes.wav").write_text("these are my lyrics, not audio\n" * 100)
    with pytest.raises(DecodeError):
        audio_io.load_audio(tmp_path / "notes.wav")


@pytest.mark.parametrize("ext", [".m4a", ".wav", ".flac"])
def test_truncated_uploads_are_refused(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"full{ext}"
    audio_io.write_audio(path, tone(6.0), sr=SR)
    data = path.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(DecodeError, match=r"truncated|corrupt|damaged"):
        audio_io.load_audio(cut)


def test_nan_samples_are_refused(tmp_path: Path) -> None:
    y = tone(0.5)
    y[1234] = np.nan
    scipy.io.wavfile.write(tmp_path / "nan.wav", SR, y)
    with pytest.raises(AudioContentError, match="NaN"):
        audio_io.load_audio(tmp_path / "nan.wav")
    z, _ = audio_io.load_audio(tmp_path / "nan.wav", allow_nonfinite=True)
    assert np.isnan(z[0, 1234])


def test_too_long_is_refused_before_decoding(tmp_path: Path) -> None:
    audio_io.write_audio(tmp_path / "long.flac", tone(3.0), sr=SR)
    with pytest.raises(AudioContentError, match="min"):
        audio_io.load_audio(tmp_path / "long.flac", max_duration_s=2.0)


def test_never_overwrites_without_permission(tmp_path: Path) -> None:
    path = tmp_path / "mix.wav"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--force"):
        audio_io.write_audio(path, tone(0.2), sr=SR)
    assert path.read_bytes() == b"precious"
    audio_io.write_audio(path, tone(0.2), sr=SR, overwrite=True)
    assert audio_io.probe(path).sr == SR
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mix.wav"]


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    bad = tone(0.2)
    bad[10] = np.inf
    with pytest.raises(AudioContentError):
        audio_io.write_audio(tmp_path / "out.m4a", bad, sr=SR)
    with pytest.raises(AudioIOError, match="use one of"):
        audio_io.write_audio(tmp_path / "out.xyz", tone(0.2), sr=SR)
    with pytest.raises(AudioIOError, match="no such directory"):
        audio_io.write_audio(tmp_path / "missing" / "out.wav", tone(0.2), sr=SR)
    assert list(tmp_path.iterdir()) == []


def test_float_wav_keeps_values_beyond_full_scale(tmp_path: Path) -> None:
    y = np.array([0.5, 1.5, -2.0] * 100, dtype=np.float32)
    audio_io.write_audio(tmp_path / "stem.wav", y, sr=SR, float_wav=True)
    z, _ = audio_io.load_audio(tmp_path / "stem.wav", mono=True)
    np.testing.assert_array_equal(z, y)


def test_errors_share_one_root() -> None:
    for cls in (DecodeError, AudioContentError, OutputExistsError, AudioIOError):
        assert issubclass(cls, MelismaError)


def test_amr_voice_memo_decodes(tmp_path: Path) -> None:
    # Old phones and voice-memo apps still write AMR-NB (8 kHz mono); PyAV's FFmpeg decodes it.
    import av

    path = tmp_path / "memo.amr"
    y = tone(2.0, sr=8000, freq=300.0)
    with av.open(str(path), mode="w", format="amr") as out:
        stream = out.add_stream("libopencore_amrnb", rate=8000)
        stream.codec_context.layout = "mono"
        stream.codec_context.bit_rate = 12200
        frame = av.AudioFrame.from_ndarray((y * 32767).astype(np.int16)[None, :], format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    z, sr = audio_io.load_audio(path, sr=SR, mono=True)
    assert sr == SR and abs(len(z) / SR - 2.0) < 0.1
    assert abs(dominant_hz(z[SR // 2 : 3 * SR // 2], SR) - 300.0) < 5
