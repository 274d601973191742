"""Real-time hygiene of the live monitor on real PortAudio streams over the JACK dummy server:
per-stage timing in the callback, the passthrough and native peers, xruns told apart by cause."""

from __future__ import annotations

import time

import numpy as np
from melisma.audio_io import write_audio
from melisma.device.audio.devices import portaudio
from melisma.device.audio.monitor import MonitorProcessor, PassthroughProcessor, run_monitor
from melisma.device.audio.stream import AudioStream, Processor

from tools.bench_audio import sung_line

SR = 48000


def test_instrumented_monitor_times_every_part_on_the_fast_path(jack, loop_later, tmp_path):
    write_audio(tmp_path / "line.wav", sung_line(2.0), sr=SR)
    seen = {}

    def started(stream, proc):
        loop_later(0.0)
        seen["proc"] = proc

    with portaudio() as pa:
        res = run_monitor(pa, seconds=1.5, data_dir=tmp_path, style="cpop", backing=tmp_path / "line.wav",
                          vocal_gain=0.3, instrument=True, tap_frames=SR, on_started=started)
    proc: MonitorProcessor = seen["proc"]
    assert proc._rt is not None and proc._rt.fast_stages == 2
    costs = res.stage_costs_us
    assert list(costs) == ["input", "DeEsser", "BandwidthExtender", "PedalboardStage", "Space", "mix"]
    assert all(0 < c["p50"] <= c["p99"] <= c["max"] for c in costs.values())
    assert proc.stage_rows >= 0.8 * res.stream.callbacks
    # the parts add up to (a little less than) the callback's own time
    total_p50_ms = sum(c["p50"] for c in costs.values()) / 1000
    assert total_p50_ms <= 1.5 * res.stream.callback_p50_ms
    s = res.stream
    assert s.gc_collections == 0  # the collector is off while the stream runs
    assert 0 < s.callback_cpu_p50_ms <= s.callback_cpu_max_ms
    assert 0 <= s.late_callbacks <= s.callbacks
    data = res.to_json()
    assert data["stage_costs_us"] == costs and data["gc_collections"] == 0
    assert {"callback_cpu_p99_ms", "late_callbacks", "start_delay_p99_ms", "minor_page_faults"} <= set(data)
    assert s.minor_page_faults >= 0 and s.major_page_faults >= 0
    assert 0 <= s.start_delay_p99_ms <= s.start_delay_max_ms
    assert np.max(np.abs(proc.tap[SR // 2:])) > 0.05  # the backing and the looped-back voice were heard


def test_reference_path_is_still_there_and_times_the_engine_stages(jack, tmp_path):
    with portaudio() as pa:
        res = run_monitor(pa, seconds=0.6, data_dir=tmp_path, style="cpop", correction=0.5, key="C major",
                          fast=False, instrument=True)
    assert list(res.stage_costs_us) == ["input", "corrector", "DeEsser", "BandwidthExtender", "PedalboardStage",
                                        "Space", "mix"]


def test_passthrough_peer_copies_the_mic_to_every_output(jack, loop_later, tmp_path):
    class Probe(PassthroughProcessor):
        def __init__(self):
            self.outs = []

        def process(self, x, out, frame):
            super().process(x, out, frame)
            if 200 <= frame // out.shape[0] < 210:
                self.outs.append((x[:, 0].copy(), out.copy()))

    probe = Probe()
    with portaudio() as pa:
        stream = AudioStream(pa, probe, frames_per_buffer=128)
        stream.start()
        try:
            stream.wait(0.8)
        finally:
            figures = stream.stop()
    assert figures.callbacks > 100 and len(probe.outs) == 10
    for mic, out in probe.outs:
        assert out.shape[1] == 2 and np.array_equal(out[:, 0], mic) and np.array_equal(out[:, 1], mic)


class _Stall(Processor):
    """Silence, except that one callback busy-waits ``stall_s`` (longer than the JACK period)."""

    def __init__(self, at_block: int, stall_s: float):
        self.at_block, self.stall_s = at_block, stall_s
        self.blocks = 0

    def process(self, x, out, frame):
        out.fill(0.0)
        self.blocks += 1
        if self.blocks == self.at_block:
            t_end = time.perf_counter() + self.stall_s
            while time.perf_counter() < t_end:
                pass


def test_an_overrunning_callback_shows_as_ours_and_the_native_peer_runs(jack):
    """A callback that overruns is a late callback, a PortAudio xrun and a client xrun in jackd's log."""
    before = jack.xrun_counts()
    with portaudio() as pa:
        stream = AudioStream(pa, _Stall(at_block=100, stall_s=0.030), frames_per_buffer=128)
        stream.start()
        try:
            stream.wait(1.2)
        finally:
            figures = stream.stop()
    after = jack.xrun_counts()
    assert figures.late_callbacks >= 1 and figures.callback_max_ms >= 30.0
    # busy: it shows in the thread's own CPU time too (less than 30 ms when other jobs share the cores)
    assert figures.callback_cpu_max_ms >= max(2.0, 20 * figures.callback_cpu_p50_ms)
    assert figures.xruns >= 1
    assert after["client"] > before["client"]
    peer = jack.native_passthrough(0.5)
    assert set(peer) == {"driver", "client"} and all(v >= 0 for v in peer.values())
