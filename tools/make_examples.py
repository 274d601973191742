"""Make the bundled example take and backing in firmware/melisma/examples/.

A synthetic singer (vibrato, slides, grace notes, detuned notes) sings a generated melody over a
backing rendered from MIDI with fluidsynth; the take is degraded like a phone recording made
while the backing played from the phone's speaker. The ground truth goes to truth.json and a
short README.txt. Deterministic: the same seed gives the same files.

Run from the repository root::

    .venv/bin/python tools/make_examples.py            # writes firmware/melisma/examples/
    .venv/bin/python tools/make_examples.py --out /tmp/ex --seed 7
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tools` importable
    sys.path.insert(0, str(REPO_ROOT))

from tools.corpus import fluidsynth_available, make_scenario, write_scenario  # noqa: E402
from tools.corpus.melody import PITCH_NAMES  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "firmware" / "melisma" / "examples"

#: The phone recording the example imitates.
EXAMPLE = dict(
    duration_s=26.0,
    sr=48000,
    key="A minor",
    tempo_bpm=92.0,
    voice="female",
    ornament_rate=1.4,
    detune_cents_max=45.0,
    offset_ms=180.0,  # Bluetooth/phone round trip: the take is late
    bleed_db=-14.0,  # backing from the phone speaker leaks into the mic
    snr_db=15.0,
    noise="pink",
    hum_hz=50,
    hum_db=-24.0,
    rir="synthetic",
    rt60_s=0.35,
    aac_kbps=64,
    mic="phone",
)


def _readme(truth: dict, seed: int) -> str:
    kinds: dict[str, int] = {}
    for o in truth["ornaments"]:
        kinds[o["type"]] = kinds.get(o["type"], 0) + 1
    detunes = [n["detune_cents"] for n in truth["notes"]]
    worst = max(detunes, key=abs) if detunes else 0.0
    d = truth["degradations"]
    lines = [
        "Melisma example take and backing",
        "================================",
        "",
        f"Made by tools/make_examples.py (seed {seed}); re-run it to make them again, byte for byte.",
        "Everything here is synthetic: no recording of a person is included.",
        "",
        "Files",
        "  take.m4a     the singer's phone take: mono AAC 64 kb/s, 48 kHz",
        "  backing.m4a  the backing track: stereo AAC 96 kb/s, 48 kHz, rendered from MIDI with",
        "               fluidsynth and the FluidR3_GM General MIDI soundfont (MIT licence)"
        if truth["backing"]["renderer"] == "fluidsynth"
        else "               the pure-numpy fallback synth of tools/corpus (fluidsynth was not installed)",
        "  melody.mid   the melody the singer meant to sing (reference for --melody)",
        "  truth.json   full ground truth: offset, key, tempo, notes, ornaments, f0 every 5 ms, degradations",
        "",
        "Ground truth",
        "  offset      {:.1f} ms: the take is late (take[t + offset] = vocal[t])".format(truth["offset_ms"]),
        "  key         {}".format(truth["key"]["name"]),
        f"  tempo       {truth['tempo_bpm']:.0f} BPM, 4/4, {len(truth['chords'])} bars",
        "  chords      {}".format(
            " | ".join(
                "".join(c[:1]) + ("m" if (PITCH_NAMES.index(c[1]) - PITCH_NAMES.index(c[0])) % 12 == 3 else "")
                for c in truth["chords"]
            )
        ),
        f"  voice       synthetic {truth['voice']} voice, {len(truth['notes'])} notes, detune up to {worst:+.0f} cents",
        "  ornaments   {}".format(", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))),
        "",
        "How the take was degraded (in this order)",
        "  speaker bleed {} dB re the voice (backing from the phone speaker, same offset as the voice)".format(d["bleed_db"]),
        "  room reverb   synthetic, RT60 %.2f s" % (d["rt60_s"] or 0.0),
        "  offset        {:.1f} ms late".format(truth["offset_ms"]),
        "  noise         {}, SNR {} dB re the voice".format(d["noise"], d["snr_db"]),
        "  hum           {} Hz + harmonics, {} dB re the voice".format(d["hum_hz"], d["hum_db"]),
        "  microphone    phone band limit 100 Hz - 7 kHz with a presence resonance",
        "  codec         AAC {} kb/s".format(d["aac_kbps"]),
        "",
        "Times in truth.json are on the backing's timeline; add the offset for the take.",
        "The files are written without the AAC encoder's priming delay, so melisma.audio_io.load_audio",
        "returns them on that timeline.",
        "",
    ]
    return "\n".join(lines)


def make_examples(out: Path, *, seed: int, duration_s: float, allow_numpy: bool) -> dict[str, str]:
    if not fluidsynth_available() and not allow_numpy:
        raise SystemExit(
            "fluidsynth or /usr/share/sounds/sf2/FluidR3_GM.sf2 is missing: install Debian "
            "fluidsynth + fluid-soundfont-gm, or pass --allow-numpy to use the fallback synth"
        )
    params = {**EXAMPLE, "duration_s": duration_s}
    scenario = make_scenario(seed=seed, backing_renderer="auto", **params)
    kinds = {o["type"] for o in scenario.truth["ornaments"]}
    missing = {"vibrato", "slide_in"} - kinds
    if missing:
        raise SystemExit(f"seed {seed} gives no {sorted(missing)}; choose another --seed")
    out.mkdir(parents=True, exist_ok=True)
    # no backing.mid here: the package finds the melody as the folder's only *.mid
    stale = out / "backing.mid"
    if stale.exists():
        stale.unlink()
    paths = write_scenario(scenario, out, take_format="m4a", backing_format="m4a", backing_kbps=96, include_backing_midi=False)
    (out / "README.txt").write_text(_readme(scenario.truth, seed), encoding="utf-8")
    paths["readme"] = str(out / "README.txt")
    for path in paths.values():
        os.chmod(path, 0o644)  # atomic writes create 0600 files; these ship with the package
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make_examples.py",
        description="Write the bundled example take (synthetic singer with vibrato and slides, degraded like a "
        "phone recording: speaker bleed, ~180 ms late, ~15 dB SNR noise, 50 Hz hum, mono AAC 64 kb/s), "
        "its backing (rendered from MIDI with fluidsynth, stereo AAC 96 kb/s), the melody MIDI, "
        "truth.json and README.txt. Deterministic for a given seed.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=2024, help="random seed (default: 2024)")
    parser.add_argument("--duration", type=float, default=EXAMPLE["duration_s"], help="length in seconds (default: 26)")
    parser.add_argument("--allow-numpy", action="store_true", help="use the numpy fallback synth if fluidsynth is missing")
    args = parser.parse_args(argv)
    paths = make_examples(args.out, seed=args.seed, duration_s=args.duration, allow_numpy=args.allow_numpy)
    total = 0
    for name, path in paths.items():
        size = Path(path).stat().st_size
        total += size
        print(f"{name:13s} {path} ({size / 1024:.0f} KiB)")
    print(f"total {total / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
