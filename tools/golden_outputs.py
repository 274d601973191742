"""Fingerprints of everything the engine writes, to show that a refactor changed nothing.

Runs the engine's file-level entry points on the bundled example and on generated corpus takes
(every path: the one-tap mix straight to a file, analyze → render with stems, a preview window,
a render with moved sliders and tuning, the corrected vocal alone, a plan without a backing) and
prints one SHA-256 per output: decoded audio samples for audio files, the JSON with its volatile
fields (timings, temporary paths, versions) removed for plans and reports.

    .venv/bin/python tools/golden_outputs.py --save before.json    # on the old code
    .venv/bin/python tools/golden_outputs.py --compare before.json # on the new code: exit 1 on any difference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `tools` importable

VOLATILE_KEYS = {"timings_s", "melisma_version", "platform", "outputs"}


def _scrub(obj: Any, root: str) -> Any:
    """The JSON minus what legitimately differs between runs (timings, temp paths, versions)."""
    if isinstance(obj, dict):
        return {k: _scrub(v, root) for k, v in obj.items() if k not in VOLATILE_KEYS}
    if isinstance(obj, list):
        return [_scrub(v, root) for v in obj]
    if isinstance(obj, str) and root in obj:
        return obj.replace(root, "<tmp>")
    return obj


def _json_digest(path: Path, root: str) -> str:
    from melisma import examples

    # temporary paths, and the bundled examples' folder (it depends on where the checkout is)
    record = _scrub(_scrub(json.loads(path.read_text(encoding="utf-8")), root), str(Path(examples.TAKE).parent))
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _audio_digest(path: Path) -> str:
    from melisma.audio_io import load_audio

    y, sr = load_audio(path)
    h = hashlib.sha256(f"{sr}:{y.shape}:{y.dtype}".encode())
    h.update(np.ascontiguousarray(y).tobytes())
    return h.hexdigest()


def _digest_tree(out: Path, root: str) -> dict[str, str]:
    digests: dict[str, str] = {}
    for path in sorted(out.rglob("*")):
        if not path.is_file():
            continue
        rel = str(path.relative_to(out))
        if path.suffix == ".json":
            digests[rel] = _json_digest(path, root)
        elif path.suffix in (".wav", ".flac", ".m4a", ".mp3", ".ogg"):
            digests[rel] = _audio_digest(path)
        elif path.suffix == ".npy":
            digests[rel] = hashlib.sha256(np.load(path, allow_pickle=False).tobytes()).hexdigest()
    return digests


def _inputs(work: Path) -> list[tuple[str, Path, Path | None]]:
    """(name, take, backing) for the bundled example and three generated scenarios."""
    from melisma import examples

    from tools.corpus import make_scenario
    from tools.corpus.scenarios import write_scenario

    cases: list[tuple[str, Path, Path | None]] = [("example", Path(examples.TAKE), Path(examples.BACKING))]
    for seed, kwargs in ((11, {"offset_ms": 140.0, "bleed_db": -14.0, "snr_db": 25.0}),
                         (12, {"offset_ms": 60.0, "bleed_db": -20.0, "hum_hz": 50.0, "clip_fraction": 0.01}),
                         (13, {"bleed_db": None, "snr_db": 30.0})):
        sc = make_scenario(seed=seed, duration_s=8.0, backing_renderer="numpy", **kwargs)
        paths = write_scenario(sc, work / f"seed{seed}", take_format="wav", backing_format="wav")
        cases.append((f"seed{seed}", Path(paths["take"]), Path(paths["backing"])))
    return cases


def run_all(work: Path) -> dict[str, str]:
    from melisma import pipeline

    out = work / "out"
    out.mkdir()
    for name, take, backing in _inputs(work):
        d = out / name
        d.mkdir()
        # a headphone take (seed13) has no bleed to align by: it is mixed at its known latency (0 ms)
        known = {"latency_ms": 0.0} if name == "seed13" else {}
        pipeline.mix_files(take, backing, d / "mix.wav", style="cpop", report_path=d / "mix.report.json", **known)
        pipeline.mix_files(take, backing, d / "mix.m4a", style="western", sliders={"warmth": 0.5, "reverb": -0.3},
                           report_path=d / "mix-m4a.report.json", **known)
        plan = pipeline.analyze_files(take, backing, d / "plan.json", style="ballad", **known)
        pipeline.render_plan(plan, d / "render.wav", report_path=d / "render.report.json", stems_dir=d / "stems")
        pipeline.render_plan(d / "plan.json", d / "moved.flac",
                             sliders={"vocal_level": 0.6, "air": 0.4, "tuning": -0.5, "ornaments": 0.5})
        pipeline.render_plan(d / "plan.json", d / "preview.wav", start_s=2.0, duration_s=3.0,
                             report_path=d / "preview.report.json")
        pipeline.render_plan(d / "plan.json", d / "corr.wav", correction=1.0, ornaments="soften")
        pipeline.render_plan(d / "plan.json", d / "stems-m4a.m4a", stems_dir=d / "stems-m4a",
                             report_path=d / "stems-m4a.report.json", target_lufs=-10.0)
        if name == "example":
            pipeline.correct_file(take, d / "corrected.wav", key="D zhi", report_path=d / "corrected.report.json")
            pipeline.analyze_files(take, None, d / "vocal-only.json")
            pipeline.render_plan(d / "vocal-only.json", d / "vocal-only.wav")
    return _digest_tree(out, str(work))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--save", type=Path, help="write the fingerprints to this JSON file")
    group.add_argument("--compare", type=Path, help="compare with fingerprints saved earlier")
    ap.add_argument("--keep", type=Path, help="write the outputs into this new folder and keep them (to diff)")
    args = ap.parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True)
        digests = run_all(args.keep.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="melisma-golden-") as tmp:
            digests = run_all(Path(tmp))
    if args.save:
        args.save.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"{len(digests)} outputs fingerprinted into {args.save}")
        return 0
    before = json.loads(args.compare.read_text(encoding="utf-8"))
    differ = sorted(k for k in set(before) | set(digests) if before.get(k) != digests.get(k))
    for k in differ:
        print(f"DIFFERS {k}: {before.get(k, 'absent')[:12]} -> {digests.get(k, 'absent')[:12]}")
    print(f"{len(digests) - len([k for k in differ if k in digests])} of {len(digests)} outputs identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
