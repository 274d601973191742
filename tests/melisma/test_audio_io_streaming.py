"""audio_io streaming parts: direct WAV writing, AudioWriter, lean decoding, .npy block I/O.

Each streaming path is checked against its whole-array counterpart (PyAV/FFmpeg encoding,
soxr one-shot resampling, np.save/np.load).
"""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest
import soxr
from melisma import audio_io
from melisma.errors import AudioContentError, AudioIOError, DecodeError

SR = 48000


def music(seconds: float, sr: int = SR, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Tones plus noise, different per channel, peaking near -3 dBFS."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    chans = [0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(t.size) for c in range(channels)]
    return np.stack(chans).astype(np.float32)


def ffmpeg_wav(path: Path, y: np.ndarray, sr: int, codec: str) -> None:
    """Reference: the WAV FFmpeg writes (the old path)."""
    layout = {1: "mono", 2: "stereo"}[y.shape[0]]
    with av.open(str(path), mode="w", format="wav") as out:
        stream = out.add_stream(codec, rate=sr)
        stream.codec_context.layout = layout
        stream.codec_context.format = {"pcm_s24le": "s32", "pcm_s16le": "s16", "pcm_f32le": "flt"}[codec]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(np.clip(y, -1, 1) if codec != "pcm_f32le" else y),
                                           format="fltp", layout=layout)
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("bits,float_wav,codec,lsb", [(24, False, "pcm_s24le", 2.0**-23), (16, False, "pcm_s16le", 2.0**-15),
                                                      (24, True, "pcm_f32le", 0.0)])
@pytest.mark.parametrize("channels", [1, 2])
def test_direct_wav_matches_ffmpeg(tmp_path: Path, bits: int, float_wav: bool, codec: str, lsb: float, channels: int) -> None:
    y = music(0.5, channels=channels) * 2.5  # drives past full scale: fixed point clips, float keeps it
    if channels == 1:
        y = y[:1]
    ours, ref = tmp_path / "ours.wav", tmp_path / "ref.wav"
    with audio_io.AudioWriter(ours, sr=SR, channels=channels, float_wav=float_wav, wav_bits=bits) as w:
        for a in range(0, y.shape[1], 7000):  # odd block sizes
            w.write(y[:, a:a + 7000] if channels == 2 else y[0, a:a + 7000])
    ffmpeg_wav(ref, y, SR, codec)
    ours_y, ours_sr = audio_io.load_audio(ours)
    ref_y, _ = audio_io.load_audio(ref)
    assert ours_sr == SR and ours_y.shape == ref_y.shape == y.shape
    assert np.abs(ours_y - ref_y).max() <= 1.01 * lsb  # at most one step apart (rounding vs truncation)
    if float_wav:
        assert np.array_equal(ours_y, y) and ours_y.max() > 1.1
    else:
        assert ours_y.max() <= 1.0 and np.abs(ours_y - np.clip(y, -1, 1 - lsb)).max() <= 0.51 * lsb + 1e-7
    if bits == 16:  # the plainest header: Python's own wave module reads it
        with wave.open(str(ours)) as wf:
            assert (wf.getnchannels(), wf.getsampwidth(), wf.getframerate(), wf.getnframes()) == (channels, 2, SR, y.shape[1])


def test_odd_sized_24_bit_data_is_padded_and_sizes_are_right(tmp_path: Path) -> None:
    path = tmp_path / "odd.wav"
    with audio_io.AudioWriter(path, sr=SR, channels=1) as w:
        w.write(np.full(3, 0.5, np.float32))  # 9 data bytes: one pad byte
    data = path.read_bytes()
    assert len(data) % 2 == 0 and int.from_bytes(data[4:8], "little") == len(data) - 8
    y, _ = audio_io.load_audio(path)
    assert y.shape == (1, 3) and np.allclose(y, 0.5, atol=2**-22)


@pytest.mark.parametrize("ext", [".flac", ".m4a", ".mp3", ".ogg"])
def test_streaming_encode_equals_whole_array_encode(tmp_path: Path, ext: str) -> None:
    y = music(1.0)
    whole, blocks = tmp_path / f"whole{ext}", tmp_path / f"blocks{ext}"
    audio_io.encode_audio(whole, y, sr=SR)
    with audio_io.AudioWriter(blocks, sr=SR, channels=2) as w:
        for a in range(0, y.shape[1], 5000):
            w.write(y[:, a:a + 5000])
    a, _ = audio_io.load_audio(whole)
    b, _ = audio_io.load_audio(blocks)
    assert a.shape == b.shape
    if ext == ".flac":
        assert np.abs(b - y).max() <= 2.0**-23  # lossless to 24 bits
    else:  # the encoder sees the same samples in the same frames: same output
        assert np.abs(a - b).max() < 1e-3


def test_writer_resamples_for_encoders_that_refuse_the_rate(tmp_path: Path) -> None:
    y = music(1.0, sr=22050)
    path = tmp_path / "x.ogg"  # opus encodes at 48 kHz only
    with audio_io.AudioWriter(path, sr=22050, channels=2) as w:
        for a in range(0, y.shape[1], 4000):
            w.write(y[:, a:a + 4000])
    z, sr = audio_io.load_audio(path)
    assert sr == 48000 and abs(z.shape[1] - 48000) < 0.03 * 48000


def test_writer_restart_discards_the_first_attempt(tmp_path: Path) -> None:
    for ext in (".wav", ".flac"):
        path = tmp_path / f"r{ext}"
        with audio_io.AudioWriter(path, sr=SR, channels=2) as w:
            w.write(np.full((2, 9000), 0.9, np.float32))
            w.restart()
            w.write(np.full((2, 4000), 0.25, np.float32))
        z, _ = audio_io.load_audio(path)
        assert z.shape == (2, 4000) and np.allclose(z, 0.25, atol=1e-6)


def test_writer_refuses_bad_blocks(tmp_path: Path) -> None:
    with pytest.raises(AudioIOError, match="use one of"):
        audio_io.AudioWriter(tmp_path / "x.aiff", sr=SR, channels=2)
    with pytest.raises(AudioIOError, match="mono or stereo"):
        audio_io.AudioWriter(tmp_path / "x.wav", sr=SR, channels=6)
    with audio_io.AudioWriter(tmp_path / "x.wav", sr=SR, channels=2) as w:
        with pytest.raises(AudioIOError, match="does not fit"):
            w.write(np.zeros((1, 10), np.float32))
        bad = np.zeros((2, 10), np.float32)
        w.write(bad)
        bad[1, 3] = np.nan
        with pytest.raises(AudioContentError, match="first at sample 13"):
            w.write(bad)


# ---------------------------------------------------------------------------------------------
# Decoding


@pytest.mark.parametrize("file_sr,channels_in", [(44100, 2), (48000, 2), (22050, 1)])
def test_streaming_decode_equals_decode_then_resample(tmp_path: Path, file_sr: int, channels_in: int) -> None:
    y = music(3.0, sr=file_sr, channels=channels_in)
    path = tmp_path / "in.wav"
    audio_io.write_audio(path, y, sr=file_sr, float_wav=True)
    for channels in (None, 1, 2):
        d = audio_io.decode(path, sr=48000, channels=channels, analysis_sr=16000)
        ref = y
        if channels == 1:
            ref = y.mean(axis=0, dtype=np.float32)[None, :]
        elif channels == 2 and channels_in == 1:
            ref = np.repeat(y, 2, axis=0)
        ref = audio_io.resample(ref, orig_sr=file_sr, target_sr=48000)
        assert d.audio.shape == ref.shape and d.audio.flags.c_contiguous and d.audio.dtype == np.float32
        assert np.abs(d.audio - ref).max() < 1e-5
        assert d.peak == pytest.approx(float(np.abs(ref).max()), abs=1e-6)
        mono16 = soxr.resample(y.mean(axis=0, dtype=np.float32), file_sr, 16000, quality="HQ")
        assert d.analysis.shape == mono16.shape and np.abs(d.analysis - mono16).max() < 1e-5
        assert (d.file_sr, d.file_channels, d.sr) == (file_sr, channels_in, 48000)


def test_decode_folds_multichannel_to_stereo(tmp_path: Path) -> None:
    y = music(1.0, channels=4)
    path = tmp_path / "quad.flac"
    # 4-channel flac via PyAV directly (AudioWriter is mono/stereo only)
    with av.open(str(path), mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=SR)
        stream.codec_context.layout = "quad"
        stream.codec_context.format = "s32"
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(y), format="fltp", layout="quad")
        frame.sample_rate = SR
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    d = audio_io.decode(path, channels=2)
    whole, _ = audio_io.load_audio(path)
    expected = np.stack([whole[0::2].mean(axis=0), whole[1::2].mean(axis=0)])
    assert d.audio.shape == (2, SR) and np.abs(d.audio - expected).max() < 1e-6


def test_decode_into_npy_equals_decode_in_memory(tmp_path: Path) -> None:
    y = music(2.0, sr=44100)
    path = tmp_path / "in.flac"
    audio_io.write_audio(path, y, sr=44100)
    in_memory = audio_io.decode(path, sr=48000, channels=2)
    on_disk = audio_io.decode(path, sr=48000, channels=2, npy_path=tmp_path / "out.npy")
    assert on_disk.audio is None and on_disk.n_samples == in_memory.n_samples
    loaded = np.load(on_disk.npy_path)
    assert loaded.shape == in_memory.audio.shape and np.array_equal(loaded, in_memory.audio)
    with audio_io.NpyBlockReader(on_disk.npy_path) as r:
        assert np.array_equal(r.read(1000, 5000), in_memory.audio[:, 1000:5000])
    mono = audio_io.decode(path, sr=48000, channels=1, npy_path=tmp_path / "mono.npy")
    assert np.load(mono.npy_path).shape == (in_memory.n_samples,)


def test_decode_grows_past_a_wrong_declared_duration(tmp_path: Path, monkeypatch) -> None:
    y = music(2.0)
    path = tmp_path / "in.wav"
    audio_io.write_audio(path, y, sr=SR)
    monkeypatch.setattr(audio_io, "_capacity", lambda declared_s, sr: 1000)  # a container that under-declares
    d = audio_io.decode(path, channels=2)
    assert d.audio.shape == y.shape and np.abs(d.audio - y).max() <= 2.0**-23


@pytest.mark.parametrize("under_declared", [False, True])
def test_decode_writes_the_analysis_copy_into_the_buffers_it_is_given(tmp_path: Path, monkeypatch,
                                                                      under_declared: bool) -> None:
    y = music(2.0, sr=44100)
    path = tmp_path / "in.flac"
    audio_io.write_audio(path, y, sr=44100)
    plain = audio_io.decode(path, sr=48000, channels=1, analysis_sr=16000)
    if under_declared:
        monkeypatch.setattr(audio_io, "_capacity", lambda declared_s, sr: 1000)  # the buffer must grow
    given: list[np.ndarray] = []

    def allocate(size: int) -> np.ndarray:
        given.append(np.full(size, np.nan, np.float32))
        return given[-1]

    d = audio_io.decode(path, sr=48000, channels=1, analysis_sr=16000, analysis_buffer=allocate,
                        npy_path=tmp_path / "take.npy")
    assert np.array_equal(d.analysis, plain.analysis)
    assert np.shares_memory(d.analysis, given[-1])  # written where it was asked, not copied
    assert (len(given) > 1) == under_declared
    with pytest.raises(AudioIOError, match="analysis_buffer"):
        audio_io.decode(path, sr=48000, channels=1, analysis_sr=16000, analysis_buffer=lambda n: np.zeros(n))


@pytest.mark.parametrize(("n", "orig_sr", "target_sr"), [(100_003, 48000, 16000), (70_001, 44100, 16000), (5, 48000, 16000),
                                                      (40_000, 16000, 16000)])
def test_resample_blocks_equals_resample_into_the_given_buffer(n: int, orig_sr: int, target_sr: int) -> None:
    y = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    given: list[np.ndarray] = []

    def allocate(size: int) -> np.ndarray:
        given.append(np.empty(size, np.float32))
        return given[-1]

    out = audio_io.resample_blocks(y, orig_sr=orig_sr, target_sr=target_sr, allocate=allocate, block=8192)
    assert np.array_equal(out, audio_io.resample(y, orig_sr=orig_sr, target_sr=target_sr))
    assert np.shares_memory(out, given[-1])


def test_failed_decode_into_npy_leaves_no_file(tmp_path: Path) -> None:
    y = music(1.0)
    path = tmp_path / "bad.wav"
    audio_io.write_audio(path, y, sr=SR, float_wav=True)
    # put an Inf in by hand (writers refuse NaN/Inf)
    raw = bytearray(path.read_bytes())
    data_at = raw.index(b"data") + 8
    raw[data_at + 4 * 2 * 30000: data_at + 4 * 2 * 30000 + 4] = np.float32(np.inf).tobytes()
    path.write_bytes(bytes(raw))
    target = tmp_path / "out.npy"
    with pytest.raises(AudioContentError, match="first at sample 30000"):
        audio_io.decode(path, channels=2, npy_path=target)
    assert not target.exists()


def test_decode_refuses_truncated_and_garbage(tmp_path: Path) -> None:
    garbage = tmp_path / "g.m4a"
    garbage.write_bytes(b"not audio at all" * 100)
    with pytest.raises(DecodeError):
        audio_io.decode(garbage)
    with pytest.raises(AudioIOError, match="channels=3"):
        audio_io.decode(garbage, channels=3)


# ---------------------------------------------------------------------------------------------
# .npy block reading


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy_block_reader_matches_np_load(tmp_path: Path, order: str) -> None:
    y = np.asfortranarray(music(0.5)) if order == "F" else music(0.5)
    path = tmp_path / "x.npy"
    np.save(path, y)
    with audio_io.NpyBlockReader(path) as r:
        assert r.shape == y.shape and r.fortran_order == (order == "F")
        for start, stop in [(0, 10), (777, 5000), (y.shape[1] - 5, y.shape[1] + 20), (y.shape[1] + 3, y.shape[1] + 9)]:
            got = r.read(start, stop)
            expected = np.zeros((2, stop - start), np.float32)
            have = max(0, min(stop, y.shape[1]) - start)
            expected[:, :have] = y[:, start:start + have]
            assert got.flags.c_contiguous and np.array_equal(got, expected)
    mono = tmp_path / "m.npy"
    np.save(mono, y[0])
    assert np.array_equal(audio_io.read_npy(mono, start=100, stop=200), y[0, 100:200])


def test_npy_block_reader_refuses_other_arrays(tmp_path: Path) -> None:
    path = tmp_path / "i.npy"
    np.save(path, np.zeros(10, np.int16))
    with pytest.raises(AudioIOError, match="expected float32"):
        audio_io.NpyBlockReader(path)
