"""Outputs that are exactly what they say: every format gives back a click at the sample it was
written at, and the decoder honours the AAC priming that phones and iTunes signal."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from melisma import audio_io, mp4_gapless

SR = 48000
#: Click positions, in seconds: on and off the codecs' frame grid.
CLICKS_S = (0.25, 0.8011, 1.5337)


def clicks(n: int, sr: int, channels: int = 1) -> tuple[np.ndarray, list[int]]:
    """A quiet tone with sharp clicks on top (the tone keeps lossy encoders honest)."""
    t = np.arange(n) / sr
    y = (0.02 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    at = [round(s * sr) for s in CLICKS_S if s * sr < n - 0.05 * sr]
    for i in at:
        y[i] += 0.8
    out = np.stack([y, 0.5 * y]) if channels == 2 else y
    return out, at


def click_positions(z: np.ndarray, at: list[int], sr: int) -> list[int]:
    """Where each click landed: the largest sample within 50 ms of where it was written."""
    w = int(0.05 * sr)
    mono = np.abs(z if z.ndim == 1 else z[0])
    return [a - w + int(np.argmax(mono[a - w:a + w])) for a in at]


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("sr", [48000, 44100])
@pytest.mark.parametrize("ext", [".wav", ".flac", ".m4a", ".mp3", ".ogg", ".opus"])
def test_a_click_comes_back_at_the_same_sample_in_every_format(tmp_path: Path, ext: str, sr: int, channels: int) -> None:
    n = 2 * sr + 37  # not a whole number of codec frames
    y, at = clicks(n, sr, channels)
    path = tmp_path / f"click{ext}"
    audio_io.write_audio(path, y, sr=sr)
    z, z_sr = audio_io.load_audio(path, sr=sr)  # opus is stored at 48 kHz: back to the written rate
    assert z_sr == sr
    assert z.shape == (channels, n), f"{ext}: {z.shape[1] - n:+d} samples"
    assert click_positions(z, at, sr) == at
    # the streaming decoder (used to measure a written mix) agrees with the array decoder
    if sr == 48000 or ext != ".opus":
        streamed = np.concatenate([b for b, _ in audio_io.iter_decoded(path, block_samples=5000)], axis=1)
        np.testing.assert_array_equal(streamed, audio_io.load_audio(path)[0])


def _elst(data: bytes) -> tuple[int, int, int]:
    """(movie timescale, segment duration, media time) of the first edit of an MP4 file."""
    mvhd = data.index(b"mvhd")
    version = data[mvhd + 4]
    timescale = struct.unpack(">I", data[mvhd + 16:mvhd + 20] if version == 0 else data[mvhd + 24:mvhd + 28])[0]
    elst = data.index(b"elst")
    assert data[elst + 4] == 0  # version 0: 32-bit fields
    count, duration, media_time = struct.unpack(">IIi", data[elst + 8:elst + 20])
    assert count == 1
    return timescale, duration, media_time


def test_m4a_signals_its_priming_in_the_edit_list_and_itunsmpb(tmp_path: Path) -> None:
    n = SR + 123
    path = tmp_path / "mix.m4a"
    audio_io.write_audio(path, clicks(n, SR, 2)[0], sr=SR)
    data = path.read_bytes()
    priming = 1024 + audio_io.AAC_PREROLL  # the encoder's own priming and the mirrored pre-roll
    assert _elst(data) == (SR, n, priming)  # exact to the sample: the movie timescale is the sample rate
    with av.open(str(path)) as c:
        smpb = mp4_gapless.parse_itunsmpb(c.metadata["iTunSMPB"])
        packets = sum(1 for p in c.demux(c.streams.audio[0]) if p.size)
    assert smpb == (priming, packets * 1024 - priming - n, n)
    assert data.count(b"iTunSMPB") == 1


def _encode_like_a_phone(path: Path, y: np.ndarray, sr: int, *, extra_priming: int, edit_list: bool,
                         smpb: bool, movie_timescale: int = 600) -> int:
    """An AAC .m4a with more priming than FFmpeg's own (as Apple's encoder: 2112 = 1024 + 1088),
    the extra samples being junk that a decoder must drop. Returns the priming signalled."""
    rng = np.random.default_rng(0)
    junk = (0.5 * rng.standard_normal((1, extra_priming))).astype(np.float32)
    x = np.concatenate([junk, y[None, :]], axis=1)
    options = {"movie_timescale": str(movie_timescale)}
    if not edit_list:
        options["use_editlist"] = "0"
    first = None
    packets = 0
    with av.open(str(path), "w", format="ipod", options=options) as out:
        stream = out.add_stream("aac", rate=sr)
        stream.codec_context.layout = "mono"
        stream.codec_context.bit_rate = 96000
        pts = -extra_priming  # the junk sits before time zero, so the edit list skips it too
        for a in range(0, x.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, a:a + 1024]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, pts, Fraction(1, sr)
            pts += frame.samples
            for packet in stream.encode(frame):
                first = packet.pts if first is None else first
                packets += 1
                out.mux(packet)
        for packet in stream.encode(None):
            packets += 1
            out.mux(packet)
    priming = -int(first)
    if smpb:
        mp4_gapless.add_itunsmpb(path, priming=priming, padding=packets * 1024 - priming - y.size, samples=y.size)
    return priming


@pytest.mark.parametrize(("edit_list", "smpb"), [(True, False), (False, True), (True, True)],
                         ids=["edit-list (iPhone, Android)", "iTunSMPB only (iTunes)", "both"])
def test_a_phone_take_with_signalled_priming_decodes_on_time(tmp_path: Path, edit_list: bool, smpb: bool) -> None:
    n = 3 * SR + 501
    y, at = clicks(n, SR)
    path = tmp_path / "take.m4a"
    priming = _encode_like_a_phone(path, y, SR, extra_priming=1088, edit_list=edit_list, smpb=smpb)
    assert priming == 2112
    if edit_list:
        assert _elst(path.read_bytes())[2] == 2112
    z, sr = audio_io.load_audio(path, mono=True)
    assert click_positions(z, at, sr) == at
    # with iTunSMPB the length is exact; an edit list in a 600 Hz movie timescale is exact to 1/600 s
    assert z.size == n if smpb else abs(z.size - n) <= SR // 600
    d = audio_io.decode(path, sr=16000, channels=1, analysis_sr=16000)
    assert abs(d.n_samples - round(n / 3)) <= 27


def test_an_m4a_without_priming_signalled_is_decoded_as_it_is(tmp_path: Path) -> None:
    """Nothing is guessed: a file that does not say is decoded whole (what FFmpeg shows)."""
    n = SR
    y, at = clicks(n, SR)
    path = tmp_path / "old.m4a"
    _encode_like_a_phone(path, y, SR, extra_priming=0, edit_list=False, smpb=False)
    z, _ = audio_io.load_audio(path, mono=True)
    assert click_positions(z, [a + 1024 for a in at], SR) == [a + 1024 for a in at]


def _strip_udta(path: Path) -> None:
    """Remove moov/udta (the metadata FFmpeg writes) from a file whose moov comes last."""
    data = bytearray(path.read_bytes())
    moov = data.index(b"moov") - 4
    udta = data.index(b"udta", moov) - 4
    size = struct.unpack(">I", data[udta:udta + 4])[0]
    del data[udta:udta + size]
    data[moov:moov + 4] = struct.pack(">I", struct.unpack(">I", data[moov:moov + 4])[0] - size)
    path.write_bytes(bytes(data))


def test_the_tag_is_replaced_not_doubled_and_created_where_missing(tmp_path: Path) -> None:
    path = tmp_path / "t.m4a"
    y, _ = clicks(SR, SR)
    audio_io.write_audio(path, y, sr=SR)
    before, _ = audio_io.load_audio(path)
    mp4_gapless.add_itunsmpb(path, priming=1024, padding=0, samples=SR - 100)
    with av.open(str(path)) as c:
        assert mp4_gapless.parse_itunsmpb(c.metadata["iTunSMPB"]) == (1024, 0, SR - 100)
    assert path.read_bytes().count(b"iTunSMPB") == 1
    after, _ = audio_io.load_audio(path)
    np.testing.assert_array_equal(after, before[:, : SR - 100])  # the tag's count rules the length
    _strip_udta(path)
    with av.open(str(path)) as c:
        assert "iTunSMPB" not in c.metadata
    mp4_gapless.add_itunsmpb(path, priming=1024, padding=0, samples=SR - 7)
    with av.open(str(path)) as c:
        assert mp4_gapless.parse_itunsmpb(c.metadata["iTunSMPB"]) == (1024, 0, SR - 7)
    assert audio_io.load_audio(path)[0].shape == (1, SR - 7)


def test_a_wrong_sample_count_does_not_cut_audio(tmp_path: Path) -> None:
    """A tag claiming far fewer samples than the file holds is not believed (nothing is lost)."""
    path = tmp_path / "t.m4a"
    audio_io.write_audio(path, clicks(2 * SR, SR)[0], sr=SR)
    mp4_gapless.add_itunsmpb(path, priming=1024, padding=0, samples=SR)
    z, _ = audio_io.load_audio(path, mono=True)
    assert z.size >= 2 * SR


def test_adding_the_tag_to_a_file_without_moov_last_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.m4a"
    audio_io.write_audio(path, clicks(SR, SR)[0], sr=SR)
    path.write_bytes(path.read_bytes() + struct.pack(">I4s", 16, b"free") + bytes(8))
    with pytest.raises(audio_io.AudioIOError, match="not the last"):
        mp4_gapless.add_itunsmpb(path, priming=1024, padding=0, samples=SR)


def test_a_mix_that_starts_loud_keeps_its_first_frame_clean_in_aac(tmp_path: Path) -> None:
    """The encoder's first frame after its silent priming decodes badly (without the pre-roll a
    kick at time zero comes back 1.6 dB over its peak, 14 dB SNR); the mirrored pre-roll takes
    that frame, so the mix's own first samples come back clean and no peak grows."""
    t = np.arange(SR) / SR
    rng = np.random.default_rng(5)
    kick = 0.8 * np.exp(-8 * t) * np.sin(2 * np.pi * (50 + 200 * np.exp(-30 * t)) * t)
    y = (kick + 0.05 * np.minimum(1.0, t * SR / 100) * rng.standard_normal(SR)).astype(np.float32)
    y = np.stack([y, 0.9 * y])
    path = tmp_path / "loud-start.m4a"
    audio_io.write_audio(path, y, sr=SR)
    z, _ = audio_io.load_audio(path)
    first = slice(0, 1024)
    snr = 10 * np.log10(np.mean(y[:, first] ** 2) / np.mean((z - y)[:, first] ** 2))
    assert snr >= 20.0
    assert np.abs(z[:, first]).max() <= 1.05 * np.abs(y[:, first]).max()


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("n", [96037, 144037, 115201, 3 * SR + 37])
def test_mp3_lengths_are_exact_whatever_the_length(tmp_path: Path, n: int, channels: int) -> None:
    """FFmpeg's LAME wrapper writes the end padding a few samples short for some lengths (144037
    came back 10 samples long); the writer sets it from what it encoded."""
    y, at = clicks(n, SR, channels)
    path = tmp_path / "t.mp3"
    audio_io.write_audio(path, y, sr=SR)
    z, _ = audio_io.load_audio(path)
    assert z.shape == (channels, n)
    assert click_positions(z, at, SR) == at
