"""Are the written files what the report says? Per output format: where a click comes back, and
the loudness and true peak of the mix file measured on its own against the target and the report.

    .venv/bin/python tools/check_outputs.py                  # the bundled example, targets -14 and -9 LUFS
    .venv/bin/python tools/check_outputs.py --targets -14 -10 -8

Prints one line per format and target: the file's integrated loudness (pyloudnorm, BS.1770-4),
its error against the target, its true peak (4x oversampled), what the report's headline says,
and the codec's own click offset and length change (a click written at a known sample, decoded).
Exit status 1 if a file lands more than 0.5 LU from its target, over -1 dBTP, disagrees with its
report by more than 0.1 LU, or a click moves.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `tools` importable

FORMATS = (".wav", ".flac", ".m4a", ".mp3", ".ogg")
SR = 48000


def click_offsets(work: Path) -> dict[str, tuple[int, int]]:
    """Per format: (click offset in samples, decoded length minus written length)."""
    from melisma.audio_io import load_audio, write_audio

    n = 3 * SR + 37
    at = [SR // 2, SR + 4321, 2 * SR + 999]
    y = np.zeros((2, n), np.float32)
    y[:, at] = 0.8
    out = {}
    for ext in FORMATS:
        path = work / f"click{ext}"
        write_audio(path, y, sr=SR, overwrite=True)
        z, _ = load_audio(path, sr=SR)
        w = SR // 20
        found = [a - w + int(np.argmax(np.abs(z[0, a - w:a + w]))) for a in at]
        offsets = {f - a for f, a in zip(found, at, strict=True)}
        out[ext] = (max(offsets, key=abs), z.shape[1] - n)
    return out


def measure(path: Path) -> tuple[float, float]:
    """(integrated LUFS by pyloudnorm, true peak dBTP by 4x oversampling) of a file."""
    import pyloudnorm
    from melisma.audio_io import load_audio
    from scipy.signal import resample_poly

    y, sr = load_audio(path)
    lufs = pyloudnorm.Meter(sr).integrated_loudness(y.T.astype(np.float64))
    tp = 20 * np.log10(np.max(np.abs(resample_poly(y, 4, 1, axis=1))))
    return float(lufs), float(tp)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=float, nargs="+", default=[-14.0, -9.0], help="loudness targets, LUFS")
    args = ap.parse_args(argv)
    from melisma import examples, pipeline

    bad = 0
    with tempfile.TemporaryDirectory(prefix="melisma-check-") as tmp:
        work = Path(tmp)
        print("click offset (samples) and length change per format:")
        for ext, (offset, extra) in click_offsets(work).items():
            print(f"  {ext:6s} offset {offset:+5d}  length {extra:+5d}")
            bad += offset != 0 or extra != 0
        plan = pipeline.analyze_files(examples.TAKE, examples.BACKING, work / "plan.json", style="cpop")
        print("format target  file LUFS  error   file dBTP  report LUFS  report dBTP")
        for target in args.targets:
            for ext in FORMATS:
                out = work / f"mix{target:+g}{ext}"
                report = pipeline.render_plan(plan, out, target_lufs=target)
                lufs, tp = measure(out)
                loud = report["loudness"]
                print(f"  {ext:6s} {target:+5.1f}  {lufs:8.2f}  {lufs - target:+6.2f}  {tp:8.2f}  "
                      f"{loud['integrated_lufs']:10.2f}  {loud['true_peak_dbtp']:10.2f}")
                bad += abs(lufs - target) > 0.5 or tp > -1.0 + 0.05 or abs(loud["integrated_lufs"] - lufs) > 0.1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
