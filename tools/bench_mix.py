#!/usr/bin/env python3
"""Benchmark the one-tap mix on a 3-minute take, on one core.

Prints: the full mix time as a fraction of real time, peak memory (RSS of a fresh process that
only runs the mix), per-stage times, and re-render times (full and a 10 s preview), next to the
targets. Re-renders are timed twice: in a fresh process (plan load and imports included, as a CLI
call pays) and in a warm one that loads the plan once and re-renders as sliders move (what the
long-running device service pays, the latency a user feels). The warm figures are the best of
the timed renders after one warm-up render; the targets are (full mix ≤ 0.05 × real time, peak RSS ≤ 250 MB,
full re-render ≤ 2 s, preview ≤ 0.2 s).
Each measurement runs in its own process pinned to CPU 0 with one BLAS/OpenMP thread, with the
package's bytecode compiled first, as an installed package has it.

    .venv/bin/python tools/bench_mix.py [--duration 180] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE_THREAD = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")}

CHILD = r"""
import json, resource, sys, threading, time
kind, args = sys.argv[1], json.loads(sys.argv[2])
stage, stage_peaks, sampling = ["import"], {}, [args.get("memory", False)]

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024

def sample():  # peak RSS per stage (the progress callback names the stage), every 5 ms
    while sampling[0]:
        r = rss_mb()
        stage_peaks[stage[0]] = max(stage_peaks.get(stage[0], 0.0), r)
        time.sleep(0.005)

sampler = threading.Thread(target=sample, daemon=True)
if sampling[0]:
    sampler.start()

def progress(name, fraction):
    stage[0] = name

t0, c0 = time.perf_counter(), time.process_time()
from melisma import pipeline
t_import, c_import = time.perf_counter() - t0, time.process_time() - c0
t1 = time.perf_counter()
c1 = time.process_time()
t_load = 0.0
if kind == "mix":
    report = pipeline.mix_files(args["take"], args["backing"], args["out"], style="cpop", overwrite=True, progress=progress)
elif kind == "analyze":
    plan = pipeline.analyze_files(args["take"], args["backing"], args["plan"], style="cpop", overwrite=True, progress=progress)
    report = plan.record
elif kind == "render":
    stage[0] = "load plan"
    plan = pipeline.Plan.load(args["plan"])
    t_load = time.perf_counter() - t1
    report = pipeline.render_plan(plan, args["out"], sliders=args.get("sliders"), start_s=args.get("start"),
                                  duration_s=args.get("duration"), overwrite=True, progress=progress)
elif kind == "warm":
    # The device service is long-running: the plan is loaded once and every slider move re-renders.
    # The first render of each kind warms caches (imports, the corrected vocal); later ones are timed.
    plan = pipeline.Plan.load(args["plan"])
    times = {"render": [], "preview": []}
    for i, value in enumerate([0.5, 0.3, 0.6, 0.4, 0.7][: args["repeat"] + 1]):
        t = time.perf_counter()
        pipeline.render_plan(plan, args["out"], sliders={"reverb": value}, overwrite=True)
        if i:
            times["render"].append(time.perf_counter() - t)
    for i, value in enumerate([0.5, 0.2, 0.7, 0.4, 0.6, 0.3][: args["repeat"] + 2]):
        t = time.perf_counter()
        pipeline.render_plan(plan, args["preview"], sliders={"warmth": value}, start_s=args["start"],
                             duration_s=10.0, overwrite=True)
        if i:
            times["preview"].append(time.perf_counter() - t)
    report = {}
elif kind == "box":
    # The box's job path: PipelineEngine as the job queue calls it (plan kept, caches warm), Opus previews.
    from pathlib import Path
    from melisma.device.engine_adapter import PipelineEngine
    engine = PipelineEngine()
    times = {"preview": [], "preview_cpu": [], "parts": []}
    for i, value in enumerate([0.5, 0.2, 0.7, 0.4, 0.6, 0.3][: args["repeat"] + 2]):
        t, c = time.perf_counter(), time.process_time()
        rep = engine.preview(Path(args["plan"]), Path(args["preview"]), style="cpop", sliders={"warmth": value},
                             start_s=args["start"], duration_s=10.0, progress=lambda s, f: None)
        if i:
            wall = time.perf_counter() - t
            times["preview"].append(wall)
            times["preview_cpu"].append(time.process_time() - c)
            parts = dict(rep["timings_s"]["render"])
            parts["encode + rest"] = wall - sum(v for v in parts.values() if isinstance(v, float))
            times["parts"].append(parts)
    report = {}
elapsed = time.perf_counter() - t1
cpu = time.process_time() - c1
sampling[0] = False
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
usage = resource.getrusage(resource.RUSAGE_SELF)  # the whole process: interpreter start, imports, the work
print(json.dumps({"elapsed_s": elapsed, "cpu_s": cpu, "process_cpu_s": usage.ru_utime + usage.ru_stime, "import_s": t_import, "import_cpu_s": c_import, "load_s": t_load,
                  "peak_rss_mb": int(hwm) / 1024, "warm": locals().get("times"), "stage_peaks_mb": stage_peaks,
                  "timings_s": report.get("timings_s", {})}))
"""


PEER = r"""
import json, sys, time
import numpy as np
args = json.loads(sys.argv[1])
import librosa, pyworld, soxr
from melisma.analysis.pitch import hz_to_midi
vocal = np.load(args["vocal"])  # the plan's cleaned, aligned vocal at 48 kHz
t0 = time.perf_counter()
y16 = soxr.resample(vocal, 48000, 16000)
f0, voiced, _ = librosa.pyin(y16, fmin=65.0, fmax=1100.0, sr=16000, frame_length=1024, hop_length=80)
t_pyin = time.perf_counter() - t0
f0 = np.where(voiced, np.nan_to_num(f0), 0.0)
t1 = time.perf_counter()
x = vocal.astype(np.float64)
t = np.arange(len(f0)) * 0.005
f0w = np.interp(np.arange(0, len(x) / 48000, 0.005), t, f0)
sp = pyworld.cheaptrick(x, f0w, np.arange(len(f0w)) * 0.005, 48000)
ap = pyworld.d4c(x, f0w, np.arange(len(f0w)) * 0.005, 48000)
target = np.where(f0w > 0, 440.0 * 2 ** ((np.round(hz_to_midi(np.maximum(f0w, 1e-6))) - 69) / 12), 0.0)  # hard tune
y = pyworld.synthesize(target, sp, ap, 48000, 5.0)
t_world = time.perf_counter() - t1
print(json.dumps({"pyin_s": t_pyin, "world_s": t_world}))
"""


PEER_CHAIN = r"""
import json, sys, time
import numpy as np
args = json.loads(sys.argv[1])
import pedalboard, pyloudnorm
vocal = np.load(args["vocal"])
t0 = time.perf_counter()
board = pedalboard.Pedalboard([pedalboard.HighpassFilter(80), pedalboard.Compressor(-20, 3.5), pedalboard.LowShelfFilter(200, 1.0),
                               pedalboard.HighShelfFilter(8000, 1.5), pedalboard.Reverb(room_size=0.5, wet_level=0.2)])
wet = board(np.stack([vocal, vocal]), 48000)
t_chain = time.perf_counter() - t0
t1 = time.perf_counter()
meter = pyloudnorm.Meter(48000)
lufs = meter.integrated_loudness(wet.T.astype(np.float64))
mastered = pyloudnorm.normalize.loudness(wet.T.astype(np.float64), lufs, -14.0)
limited = pedalboard.Limiter(threshold_db=-1.0)(mastered.T.astype(np.float32), 48000)
again = meter.integrated_loudness(limited.T.astype(np.float64))
t_master = time.perf_counter() - t1
print(json.dumps({"chain_s": t_chain, "master_s": t_master}))
"""


def run_peer_chain(vocal_npy: Path) -> dict | None:
    """The peer chain and master (pedalboard effects + pyloudnorm loudness), one core."""
    cmd = [sys.executable, "-c", PEER_CHAIN, json.dumps({"vocal": str(vocal_npy)})]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=ROOT)
    if proc.returncode != 0:
        print(f"peer chain failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cli_import_s(repeat: int) -> tuple[float, float]:
    """Median wall time of `melisma --help` (whole process) and the import time python -X importtime gives."""
    import statistics

    exe = Path(sys.executable).with_name("melisma")
    walls, imports = [], []
    for _ in range(max(3, repeat)):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-X", "importtime", str(exe), "--help"], capture_output=True, text=True,
                              env=child_env())
        walls.append(time.perf_counter() - t)
        top = [ln for ln in proc.stderr.splitlines() if ln.startswith("import time:") and "| melisma.cli" in ln]
        imports.append(int(top[-1].split("|")[1]) / 1e6 if top else float("nan"))
    return statistics.median(walls), statistics.median(imports)


def tile_inputs(folder: Path, take: Path, backing: Path, duration_s: float) -> tuple[Path, Path]:
    """A longer (or shorter) take and backing made by repeating/cutting the benchmark's 3-minute pair."""
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from melisma import audio_io

    out_take, out_backing = folder / f"take-{duration_s:.0f}.m4a", folder / f"backing-{duration_s:.0f}.m4a"
    if out_take.exists() and out_backing.exists():
        return out_take, out_backing
    for src, dst, rate in ((take, out_take, 64000), (backing, out_backing, 128000)):
        y, sr = audio_io.load_audio(src)
        n = int(duration_s * sr)
        reps = -(-n // y.shape[-1])
        audio_io.write_audio(dst, np.concatenate([y] * reps, axis=-1)[..., :n], sr=sr, bit_rate=rate, overwrite=True)
    return out_take, out_backing


def run_peer(vocal_npy: Path) -> dict | None:
    """The peer pipeline (librosa pYIN + WORLD resynthesis) on the same vocal, one core."""
    try:
        import librosa  # noqa: F401
        import pyworld  # noqa: F401
    except ImportError:
        return None
    cmd = [sys.executable, "-c", PEER, json.dumps({"vocal": str(vocal_npy)})]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=ROOT)
    if proc.returncode != 0:
        print(f"peer pipeline failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_env() -> dict[str, str]:
    """The children's environment: one thread, this checkout, and bytecode as an installed package has it
    (an environment with PYTHONDONTWRITEBYTECODE would make every fresh process compile the modules it
    imports again: ~0.1-0.2 s that no box pays)."""
    # this checkout's package first, whichever environment runs the benchmark (an editable install may point elsewhere)
    env = {**os.environ, **ONE_THREAD, "PYTHONPATH": os.pathsep.join([str(ROOT / "firmware"), str(ROOT)])}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_package() -> None:
    """Compile the package's bytecode once, as installing it does."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "firmware" / "melisma")], env=child_env(),
                   capture_output=True, check=False)


def run_child(kind: str, args: dict) -> dict:
    cmd = [sys.executable, "-c", CHILD, kind, json.dumps(args)]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
    env = child_env()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed ({kind}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: Longest take generated in one piece (longer ones repeat the 3-minute pair, as ``--growth`` does).
GENERATED_MAX_S = 600.0


def make_inputs(folder: Path, duration_s: float) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    from melisma import audio_io

    from tools.corpus.scenarios import make_scenario

    take, backing = folder / "take.m4a", folder / "backing.m4a"
    if take.exists() and backing.exists():
        return take, backing
    if duration_s > GENERATED_MAX_S:
        # the synthesiser's backing runs a little past the take (its release tails): at 15 minutes
        # that is past the longest input the engine reads, so a long pair repeats the 3-minute one
        base = folder / "base-180"
        base.mkdir(exist_ok=True)
        tiled = tile_inputs(folder, *make_inputs(base, 180.0), duration_s)
        tiled[0].replace(take)
        tiled[1].replace(backing)
        return take, backing
    print(f"making a {duration_s:.0f} s phone take and backing ...", file=sys.stderr)
    sc = make_scenario(
        seed=2024, duration_s=duration_s, sr=48000, offset_ms=180.0, bleed_db=-15.0, snr_db=15.0, hum_hz=50, aac_kbps=64
    )
    audio_io.write_audio(take, sc.take, sr=48000, bit_rate=64000, overwrite=True)
    audio_io.write_audio(backing, sc.backing, sr=48000, bit_rate=128000, overwrite=True)
    return take, backing


FIRST_TOUCH = r"""
import sys, time
import numpy as np
gb = float(sys.argv[1])
t = time.perf_counter()
probe = np.ones(64 << 18, np.float32)  # 64 MiB of pages this process never had
probe_s = time.perf_counter() - t
warm_s, chunks = 0.0, []
if gb > 0:
    t = time.perf_counter()
    chunks = [np.ones(1 << 28, np.float32) for _ in range(max(1, int(gb)))]  # 1 GiB each, freed at exit
    warm_s = time.perf_counter() - t
print(probe_s, warm_s, len(chunks))
"""


def print_first_touch(warm_gb: float) -> None:
    """How fast a fresh process gets memory it never had (64 MiB), and optionally touch ``warm_gb``
    GiB once so that later processes are given pages the host already backs.

    A Pi's kernel hands a process zeroed pages at memory speed (a few ms for 64 MiB); a VM whose
    host backs guest memory lazily pays for each never-used guest page on its first touch (this
    machine: ~0.19 s for 64 MiB). A re-render touches ~140 MB, so such a VM can add ~0.2-0.4 s to
    it that the box never pays.
    """
    out = subprocess.run([sys.executable, "-c", FIRST_TOUCH, str(warm_gb)], capture_output=True, text=True, check=True,
                         env=child_env())
    probe_s, warm_s, chunks = out.stdout.split()
    line = f"first touch of 64 MiB in a fresh process: {1e3 * float(probe_s):.0f} ms ({64 / float(probe_s):.0f} MiB/s)"
    if int(chunks):
        after = subprocess.run([sys.executable, "-c", FIRST_TOUCH, "0"], capture_output=True, text=True, check=True,
                               env=child_env()).stdout.split()[0]
        line += (f"; warmed {chunks} GiB of the machine's memory ({int(chunks) / float(warm_s):.2f} GiB/s), "
                 f"then {1e3 * float(after):.0f} ms")
    print(line, flush=True)


def best(runs: list[dict]) -> dict:
    """The median run by elapsed time (the machine is shared: medians are steadier than minima;
    of an even number, the faster of the middle two).
    """
    runs = sorted(runs, key=lambda r: r["elapsed_s"])
    return runs[(len(runs) - 1) // 2]


LOAD_BEFORE = ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=180.0, help="take length in seconds (default 180)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest is reported")
    parser.add_argument("--keep", type=Path, default=None, help="keep/reuse inputs and outputs in this folder")
    parser.add_argument("--no-peer", action="store_true", help="skip the peers (librosa pYIN + WORLD, pedalboard + pyloudnorm)")
    parser.add_argument("--no-pyin-peer", action="store_true",
                        help="skip only the librosa pYIN + WORLD peer (minutes on one core); keep the chain and master peer")
    parser.add_argument("--memory", action="store_true", help="also peak RSS per stage of the mix and of a re-render")
    parser.add_argument("--no-base", action="store_true",
                        help="skip the 3-minute measurements (mix, re-render, previews, peers): only --memory/--growth/--batch")
    parser.add_argument("--lengths", type=lambda v: [float(x) for x in v.split(",")], default=[30.0, 180.0, 600.0, 900.0],
                        help="take lengths in seconds for --growth (default 30,180,600,900)")
    parser.add_argument("--growth", action="store_true", help="also the time/memory table for 30 s, 3, 10 and 15 min takes")
    parser.add_argument("--batch", type=int, default=0, metavar="N",
                        help="also batch throughput over N 30 s takes on 1 and 2 worker processes and local Ray")
    parser.add_argument("--warm-memory-gb", type=float, default=0.0, metavar="GB",
                        help="first touch this much of the machine's memory once, before measuring (a VM whose host "
                             "backs guest memory lazily charges each process for the never-used pages it touches)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="melisma-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print_first_touch(args.warm_memory_gb)
    compile_package()
    take, backing = make_inputs(folder, args.duration)
    plan = folder / "plan.json"
    if args.no_base:
        if args.memory and not plan.exists():
            run_child("analyze", {"take": str(take), "backing": str(backing), "plan": str(plan)})
        finish(args, folder, take, backing, plan)
        return

    mix = best(
        [
            run_child("mix", {"take": str(take), "backing": str(backing), "out": str(folder / "mix.m4a")})
            for _ in range(args.repeat)
        ]
    )
    analyze = best(
        [run_child("analyze", {"take": str(take), "backing": str(backing), "plan": str(plan)}) for _ in range(args.repeat)]
    )
    # The first render after analysing corrects the pitch and keeps the corrected and dry vocals
    # (what the box does right after analysing): a slider move's re-render starts from those.
    run_child("render", {"plan": str(plan), "out": str(folder / "rerender.wav"), "sliders": {"reverb": 0.4}})
    render = best(
        [
            run_child("render", {"plan": str(plan), "out": str(folder / "rerender.wav"), "sliders": {"reverb": 0.5}})
            for _ in range(args.repeat)
        ]
    )
    preview = best(
        [
            run_child(
                "render",
                {
                    "plan": str(plan),
                    "out": str(folder / "preview.wav"),
                    "sliders": {"warmth": 0.5},
                    "start": args.duration / 2,
                    "duration": 10.0,
                },
            )
            for _ in range(args.repeat)
        ]
    )
    warm = run_child(
        "warm",
        {
            "plan": str(plan),
            "out": str(folder / "rerender-warm.wav"),
            "preview": str(folder / "preview-warm.wav"),
            "start": args.duration / 2,
            "repeat": max(2, args.repeat),
        },
    )["warm"]

    d = args.duration
    rows = [
        (
            "full mix (analyze + render + write)",
            f"{mix['elapsed_s']:.2f} s",
            f"{mix['elapsed_s'] / d:.4f} × real time",
            "≤ 0.05 ×",
        ),
        ("  same, CPU time (steadier on a busy machine)", f"{mix['cpu_s']:.2f} s", f"{mix['cpu_s'] / d:.4f} × real time", ""),
        ("peak RSS, full mix process", f"{mix['peak_rss_mb']:.0f} MB", "", "≤ 250 MB"),
        ("analyze only", f"{analyze['elapsed_s']:.2f} s", f"{analyze['elapsed_s'] / d:.4f} × real time", ""),
        ("full re-render, fresh process (+ write wav)", f"{render['elapsed_s']:.2f} s", "load plan, no imports", "≤ 2 s"),
        ("  whole process, CPU time (start + imports)", f"{render['process_cpu_s']:.2f} s", "taskset -c 0", "≤ 2 s"),
        ("  peak RSS, re-render process", f"{render['peak_rss_mb']:.0f} MB", "", "≤ 200 MB"),
        ("full re-render, warm process (slider move)", f"{min(warm['render']):.2f} s", "plan loaded once", "≤ 2 s"),
        ("10 s preview, fresh process (+ write wav)", f"{preview['elapsed_s'] * 1000:.0f} ms", "load plan + imports", "≤ 200 ms"),
        ("10 s preview, warm process (slider move)", f"{min(warm['preview']) * 1000:.0f} ms", "plan loaded once", "≤ 200 ms"),
        ("python + engine import (not counted above)", f"{mix['import_s']:.2f} s", "", ""),
    ]
    print(f"Melisma mix benchmark: {d:.0f} s take, one core (taskset -c 0, 1 BLAS thread), median of {args.repeat}; "
          f"load average before: {LOAD_BEFORE}")
    for name, value, ratio, target in rows:
        print(f"  {name:<44} {value:>10}  {ratio:<22} {target}")
    print("  per-stage (full mix):")
    for phase, stages in mix["timings_s"].items():
        if isinstance(stages, dict):
            for stage, secs in stages.items():
                print(f"    {phase + '.' + stage:<42} {secs:8.3f} s")
    print("  re-render, fresh process, by part (wall):")
    print(f"    {'python start + imports (CPU)':<42} {render['process_cpu_s'] - render['cpu_s']:8.3f} s")
    print(f"    {'load plan':<42} {render['load_s']:8.3f} s")
    for stage, secs in render["timings_s"].get("render", {}).items():
        print(f"    {'render.' + stage:<42} {secs:8.3f} s")
    print(
        "  warm process, each timed render: re-render "
        + ", ".join(f"{t:.2f}" for t in warm["render"])
        + " s; preview "
        + ", ".join(f"{t * 1000:.0f}" for t in warm["preview"])
        + " ms"
    )
    peer = run_peer(plan.with_name(plan.name + ".cache") / "vocal.npy") if not (args.no_peer or args.no_pyin_peer) else None
    ours = mix["timings_s"].get("analysis", {}).get("analyze_pitch", float("nan")) + mix["timings_s"].get("render", {}).get(
        "correct_pitch", float("nan")
    )
    if peer:
        theirs = peer["pyin_s"] + peer["world_s"]
        print(
            f"  peer in the same run — pitch analysis + correction of this take: Melisma {ours:.2f} s "
            f"(DSP tracker, notes, ornament model, key, PSOLA) vs librosa pYIN {peer['pyin_s']:.1f} s + "
            f"WORLD {peer['world_s']:.1f} s = {theirs:.1f} s: {theirs / ours:.0f}x faster"
        )
    else:
        print("  peer (librosa pYIN + WORLD) skipped: pip install librosa pyworld, or --no-peer was given")
    print(
        f"  peak RSS: analyze {analyze['peak_rss_mb']:.0f} MB, re-render {render['peak_rss_mb']:.0f} MB, preview {preview['peak_rss_mb']:.0f} MB"
    )
    box = run_child("box", {"plan": str(plan), "preview": str(folder / "box-preview.ogg"), "start": args.duration / 2,
                            "repeat": max(2, args.repeat)})["warm"]
    print(f"  box job path, 10 s Opus preview in-process (plan kept, caches warm): median "
          f"{statistics.median(box['preview']) * 1000:.0f} ms wall, {statistics.median(box['preview_cpu']) * 1000:.0f} ms CPU"
          f"  (target ≤ 200 ms)")
    print("    by part (median, ms): " + ", ".join(
        f"{k} {statistics.median(p[k] for p in box['parts']) * 1000:.0f}" for k in box["parts"][0]))
    wall, imp = cli_import_s(args.repeat)
    print(f"  `melisma --help`: {wall * 1000:.0f} ms whole process, melisma.cli import {imp * 1000:.0f} ms (python -X importtime; target < 500 ms)")
    if peer is not None or not args.no_peer:
        chain_peer = run_peer_chain(plan.with_name(plan.name + ".cache") / "vocal.npy")
        rr = render["timings_s"].get("render", {})
        if chain_peer:
            print(f"  peer in the same run — chain: pedalboard (5 effects) {chain_peer['chain_s']:.2f} s vs Melisma vocal_chain "
                  f"{rr.get('vocal_chain', float('nan')):.2f} s (re-render, dry part kept); master: pyloudnorm + pedalboard.Limiter "
                  f"{chain_peer['master_s']:.2f} s vs Melisma balance + master {rr.get('balance', 0) + rr.get('master', 0):.2f} s")
    finish(args, folder, take, backing, plan)


def finish(args: argparse.Namespace, folder: Path, take: Path, backing: Path, plan: Path) -> None:
    """The optional parts: memory profile, growth table, batch throughput."""
    if args.memory:
        print_memory_profile(folder, take, backing, plan)
    if args.growth:
        # The one-click mix is analyse + first render (the same work, in one process); here they run as
        # two processes (so the plan is kept for the re-render), each with its own peak RSS.
        print("  growth (fresh process per run, one core): take | analyse wall s / CPU s / peak RSS | first render (corrects, "
              "writes m4a) wall s / CPU s / peak RSS | mix CPU × real time | re-render wall s / CPU s / peak RSS")
        for length in args.lengths:
            t_in, b_in = tile_inputs(folder, take, backing, length)
            gp = folder / f"plan-{length:.0f}.json"
            a = run_child("analyze", {"take": str(t_in), "backing": str(b_in), "plan": str(gp)})
            f = run_child("render", {"plan": str(gp), "out": str(folder / f"first-{length:.0f}.m4a"), "sliders": {"reverb": 0.4}})
            r = run_child("render", {"plan": str(gp), "out": str(folder / f"rr-{length:.0f}.wav"), "sliders": {"reverb": 0.5}})
            mix_cpu = a["process_cpu_s"] + f["process_cpu_s"]
            print(f"    {length / 60:5.1f} min | {a['elapsed_s']:6.1f} / {a['process_cpu_s']:6.1f} / {a['peak_rss_mb']:4.0f} MB | "
                  f"{f['elapsed_s']:6.1f} / {f['process_cpu_s']:6.1f} / {f['peak_rss_mb']:4.0f} MB | {mix_cpu / length:.4f} | "
                  f"{r['elapsed_s']:6.2f} / {r['process_cpu_s']:6.2f} / {r['peak_rss_mb']:4.0f} MB", flush=True)
    if args.batch:
        bench_batch(folder, take, backing, args.batch)
    if args.keep is None:
        shutil.rmtree(folder, ignore_errors=True)


def print_memory_profile(folder: Path, take: Path, backing: Path, plan: Path) -> None:
    """Peak RSS of each stage (sampled every 5 ms in the process itself) of the one-click mix and of a re-render."""
    mix = run_child("mix", {"take": str(take), "backing": str(backing), "out": str(folder / "mix-mem.m4a"), "memory": True})
    render = run_child("render", {"plan": str(plan), "out": str(folder / "rerender-mem.wav"), "sliders": {"reverb": 0.45},
                                  "memory": True})
    for name, run in (("one-click mix", mix), ("re-render", render)):
        print(f"  memory profile, {name} (peak RSS per stage, MB; VmHWM {run['peak_rss_mb']:.0f} MB):")
        print("    " + ", ".join(f"{stage} {mb:.0f}" for stage, mb in run["stage_peaks_mb"].items()))


def bench_batch(folder: Path, take: Path, backing: Path, n: int) -> None:
    """Throughput of `melisma batch` on n 30 s takes: 1 and 2 worker processes, and a local Ray instance."""
    sys.path.insert(0, str(ROOT))
    t_in, b_in = tile_inputs(folder, take, backing, 30.0)
    runs = [("1 process", 1, None), ("2 processes", 2, None), ("Ray local, 2 CPUs", 2, "local")]
    for name, workers, ray in runs:
        work = folder / f"batch-{workers}-{ray or 'pool'}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        manifest = work / "jobs.jsonl"
        manifest.write_text("".join(json.dumps({"take": str(t_in), "backing": str(b_in), "settings": {"style": "cpop"},
                                                "output": f"out/{i}.m4a"}) + "\n" for i in range(n)))
        cmd = [sys.executable, "-m", "melisma.cli", "batch", str(manifest), "--workers", str(workers), "-q",
               "--report", str(work / "result.json")] + (["--ray", ray] if ray else [])
        env = child_env()
        if ray:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            print(f"  batch {name}: failed: {proc.stderr[-500:]}")
            continue
        result = json.loads((work / "result.json").read_text())
        print(f"  batch, {name}: {n} × 30 s takes in {wall:.1f} s whole command ({60 * n / wall:.1f} takes/min; "
              f"{result['takes_per_minute']:.1f} takes/min once workers are up)", flush=True)


if __name__ == "__main__":
    main()
