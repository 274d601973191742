"""The ``melisma`` command: mix, analyze, render and demo.

Every error Melisma raises on purpose is printed as one line naming the problem and exits
non-zero (the code depends on the subsystem, see :mod:`melisma.errors`); no traceback.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConfigError, MelismaError

SLIDER_FLAGS = {
    "warmth": "−1 brighter … +1 warmer",
    "reverb": "−1 drier … +1 wetter",
    "vocal_level": "−1 vocal back … +1 vocal forward",
    "air": "−1 less … +1 more high-frequency air",
}


def _slider_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number; sliders take −1…+1, e.g. 0.5") from None
    if not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside −1…+1")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def _add_sliders(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("semantic sliders (each −1…+1, 0 = the style's default)")
    for name, doc in SLIDER_FLAGS.items():
        g.add_argument(f"--{name.replace('_', '-')}", dest=name, type=_slider_value, default=None, metavar="X", help=doc)


def _add_style(p: argparse.ArgumentParser, *, default: str | None) -> None:
    from .semantic import STYLE_PRESETS

    p.add_argument("--style", choices=sorted(STYLE_PRESETS), default=default,
                   help="balance and reverb preset" + (f" (default {default})" if default else " (default: the plan's)"))


def _add_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="mix file: .wav, .flac, .m4a or .mp3 (also .ogg)")
    p.add_argument("--report", metavar="REPORT.json", help="write the mix report (JSON)")
    p.add_argument("--stems", metavar="DIR", help="also write the processed vocal and the backing as placed before the master")
    p.add_argument("--plot", metavar="PICTURE.png", help="write a picture of the mix (alignment, levels, spectrum)")
    p.add_argument("--target-lufs", type=_finite_float, default=None, metavar="LUFS", help="master loudness (default −14)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    _add_report_frames(p)


def _add_report_frames(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-frames", action="store_true",
                   help="keep the per-frame pitch curves in the report (they are always in the plan)")


def _correction_value(text: str) -> float:
    value = _finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside 0…1 (0 leaves pitch untouched, 1 puts note centres on target)")
    return value


POLICIES = ("keep", "soften", "flatten")


def _ornament_policy(text: str) -> str | dict[str, str]:
    text = text.strip()
    if "=" not in text:
        if text not in POLICIES:
            raise argparse.ArgumentTypeError(
                f"'{text}': use keep, soften or flatten, or TYPE=POLICY pairs like vibrato=keep,slide=soften"
            )
        return text
    policy: dict[str, str] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if value not in POLICIES:
            raise argparse.ArgumentTypeError(f"'{part}': the policy must be keep, soften or flatten")
        policy[name] = value
    return policy


def _add_pitch(p: argparse.ArgumentParser, *, analysis: bool = True, render: bool = True) -> None:
    g = p.add_argument_group("pitch correction (keeps vibrato, slides, grace notes and trills)")
    if analysis:
        g.add_argument(
            "--key", metavar="K", help="the song's key: 'A minor', 'F#', 'Eb major', 'D zhi' (pentatonic gong/shang/jue/zhi/yu)"
        )
        g.add_argument("--scale", metavar="S", help="mode for --key: major, minor, gong, shang, jue, zhi, yu")
        g.add_argument("--melody", metavar="M.mid", help="the song's melody as MIDI: notes are corrected toward it")
        g.add_argument(
            "--tracker",
            choices=("dsp", "model"),
            default=None,
            help="pitch tracker: the DSP baseline (default) or the int8 on-device model",
        )
    if render:
        g.add_argument(
            "--correction",
            type=_correction_value,
            default=None,
            metavar="X",
            help="how far note centres move to target, 0…1 (default from --tuning: 0.8)",
        )
        g.add_argument(
            "--ornaments",
            type=_ornament_policy,
            default=None,
            metavar="P",
            help="keep, soften or flatten ornaments (default keep), or per type: "
            "'vibrato=keep,slide=soften,grace=keep' (types: vibrato, slide, slide_in, slide_out, "
            "portamento, grace, trill, mordent, drift)",
        )
        g.add_argument("--tuning", type=_slider_value, default=None, metavar="X", help="−1 natural … +1 tight (slider)")
    if analysis and p.prog.split()[-1] != "correct":
        g.add_argument("--no-correct", dest="pitch", action="store_false", help="skip pitch analysis and correction")


def _add_accept_guess(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--accept-alignment-guess",
        action="store_true",
        help="when the take's offset cannot be measured (no backing bleed, no --latency-ms), mix at the "
        "best guess instead of refusing (the report says so)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")


def build_parser() -> argparse.ArgumentParser:
    """The ``melisma`` command line: its subcommands and their options."""
    parser = argparse.ArgumentParser(
        prog="melisma",
        description="Melisma: a phone take plus a backing track in, a finished mix out.",
    )
    parser.add_argument("--version", action="version", version=f"melisma {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("mix", help="one tap: align, clean, process, balance and master a take over a backing")
    p.add_argument("take", help="the singer's take (m4a, mp3, ogg/opus, amr, wav, flac; any rate/channels)")
    p.add_argument("backing", help="the backing track")
    _add_outputs(p)
    _add_style(p, default="neutral")
    _add_sliders(p)
    p.add_argument(
        "--latency-ms",
        type=_finite_float,
        default=None,
        metavar="MS",
        help="calibrated phone round-trip latency, used when the take has no backing bleed",
    )
    _add_accept_guess(p)
    _add_pitch(p)
    _add_common(p)

    p = sub.add_parser("analyze", help="do the expensive analysis once and save a plan (JSON + cache folder)")
    p.add_argument("take")
    p.add_argument(
        "backing", nargs="?", default=None, help="the backing track (optional: without it the plan holds the vocal only)"
    )
    p.add_argument("-o", "--output", required=True, metavar="PLAN.json")
    _add_style(p, default="neutral")
    _add_sliders(p)
    p.add_argument("--latency-ms", type=_finite_float, default=None, metavar="MS")
    _add_accept_guess(p)
    p.add_argument("--target-lufs", type=_finite_float, default=None, metavar="LUFS")
    p.add_argument("--force", action="store_true", help="overwrite an existing plan")
    _add_pitch(p)
    _add_common(p)

    p = sub.add_parser("render", help="render a saved plan with new slider values (no re-analysis)")
    p.add_argument("plan", metavar="PLAN.json")
    _add_outputs(p)
    _add_style(p, default=None)
    _add_sliders(p)
    p.add_argument("--start", type=_finite_float, default=None, metavar="S", help="preview window start, seconds")
    p.add_argument("--duration", type=_finite_float, default=None, metavar="D", help="preview window length, seconds")
    _add_pitch(p, analysis=False)
    _add_common(p)

    p = sub.add_parser("correct", help="pitch-correct a take and write the corrected vocal alone")
    p.add_argument("take")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="corrected vocal: .wav, .flac, .m4a, .mp3, .ogg")
    p.add_argument("--report", metavar="REPORT.json", help="write the pitch report (notes, ornaments, corrections)")
    p.add_argument("--plot", metavar="PICTURE.png", help="f0 before and after, note targets, ornaments marked")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    _add_report_frames(p)
    _add_pitch(p)
    _add_common(p)

    p = sub.add_parser("demo", help="mix the bundled example take and write the mix, its report and a picture")
    p.add_argument("-o", "--output-dir", default="melisma-demo", metavar="DIR", help="where to write (default ./melisma-demo)")
    _add_style(p, default="cpop")
    p.add_argument("--force", action="store_true", help="write into DIR even if it was not made by the demo")
    _add_common(p)

    sub.add_parser("selftest", help="check this installation: models load, a short mix runs, BLE starts on a virtual link")
    from .batch import add_parser as add_batch_parser

    add_batch_parser(sub)
    return parser


def _sliders(args: argparse.Namespace) -> dict[str, float]:
    names = (*SLIDER_FLAGS, "tuning")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def _pitch_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "pitch": getattr(args, "pitch", True),
        "key": getattr(args, "key", None),
        "scale": getattr(args, "scale", None),
        "melody_path": getattr(args, "melody", None),
        "pitch_tracker": getattr(args, "tracker", None),
        "correction": getattr(args, "correction", None),
        "ornaments": getattr(args, "ornaments", None),
    }


def _summary(report: dict[str, Any], out: str | None) -> str:
    head = report.get("headline")
    if head and head.get("lines"):  # a mix or correction report: its headline, as the report opens
        lines = ([f"wrote {out}"] if out else []) + [f"  {line}" for line in head["lines"]]
        lines += [f"  warning:   {w}" for w in report.get("warnings", [])]
        return "\n".join(lines)
    lines = []
    if out:
        lines.append(f"wrote {out}")
    al = report.get("alignment") or {}
    if al:
        lines.append(
            f"  alignment: take was {al.get('offset_ms', 0):+.1f} ms late ({al.get('method')}, "
            f"confidence {al.get('confidence', 0):.2f}"
            + (", a guess you accepted" if al.get("decision") == "accepted guess" else "")
            + ")"
        )
    actions = ((report.get("cleanup") or {}).get("actions")) or []
    if actions:
        words = []
        for a in actions:
            name = a.get("action")
            if name == "hum_notch":
                words.append(f"{a.get('fundamental_hz', 0):.1f} Hz hum notched ({a.get('harmonics')} harmonics)")
            elif name == "denoise":
                words.append(f"denoised (SNR was {a.get('snr_db', float('nan')):.0f} dB)")
            elif name == "declip":
                words.append("clipping repaired")
            elif name:
                words.append(name)
        lines.append("  clean-up:  " + ", ".join(words))
    bal = report.get("balance") or {}
    if bal:
        lines.append(
            f"  balance:   vocal {bal.get('vocal_to_backing_lu', float('nan')):+.1f} LU over the backing "
            f"(target {bal.get('target_lu', float('nan')):+.1f})"
        )
    loud = report.get("loudness") or {}
    if loud:
        where = {"file": ", measured on the file", "master": ""}.get(loud.get("measured", ""), "")
        target = f" (target {loud['target_lufs']:g})" if loud.get("target_lufs") is not None else ""
        lines.append(
            f"  loudness:  {loud.get('integrated_lufs', float('nan')):.1f} LUFS{target}, "
            f"true peak {loud.get('true_peak_dbtp', float('nan')):.1f} dBTP{where}"
        )
    pitch = report.get("pitch") or {}
    if pitch.get("notes") is not None:
        key = pitch.get("key") or {}
        line = (f"  pitch:     {len(pitch['notes'])} notes, {len(pitch.get('ornaments', []))} ornaments, "
                f"key {key.get('name')} ({key.get('source')})")
        if pitch.get("median_abs_cents_error_after") is not None:
            line += f", median error after correction {pitch['median_abs_cents_error_after']:.1f} cents"
        lines.append(line)
    for w in report.get("warnings", []):
        lines.append(f"  warning:   {w}")
    return "\n".join(lines)


def _output_folders(args: argparse.Namespace) -> list[Path]:
    """The folders this run writes into (where a killed earlier run may have left its temporary files)."""
    folders = []
    for name in ("output", "report", "plot"):
        value = getattr(args, name, None)
        if value:
            folders.append(Path(value).parent)
    if getattr(args, "stems", None):
        folders += [Path(args.stems), Path(args.stems).parent]
    if args.command == "analyze" and args.output:
        folders.append(Path(args.output).with_name(Path(args.output).name + ".cache"))
    if args.command == "demo":
        folders += [Path(args.output_dir), Path(args.output_dir) / "stems"]
    return folders


def _sweep_leftovers(args: argparse.Namespace) -> None:
    """Remove what killed earlier runs left where this one writes (only Melisma's own temporary names)."""
    from .leftovers import sweep

    for folder in dict.fromkeys(_output_folders(args)):
        sweep(folder)


#: Messages for the file-system errors an output can meet while it is written.
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device; free some space and run it again",
    errno.EDQUOT: "the disk quota is used up; free some space and run it again",
    errno.EFBIG: "the file grew larger than this file system (or `ulimit -f`) allows; write it elsewhere",
    errno.ENAMETOOLONG: "the file name is too long for this file system; choose a shorter name",
    errno.ELOOP: "a symlink loop is in the way; choose another path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EACCES: "permission denied; choose a folder you may write to",
    errno.EPERM: "operation not permitted; choose a folder you may write to",
    errno.EROFS: "the file system is read-only; choose another folder",
    errno.EISDIR: "is a directory; give a file name",
    errno.EIO: "an I/O error (a failing disk or card?); check the storage",
}


def _os_error_message(exc: OSError, output: str | None = None) -> str:
    """One line for an OSError: the path, what went wrong, what would work, and that nothing was written."""
    what = _OS_ERRORS.get(exc.errno or -1, f"{exc.strerror or exc}; check the path and try again")
    where = exc.filename if exc.filename is not None else (f"writing {output}" if output else "")
    where = os.fsdecode(where) if isinstance(where, (bytes, str)) else str(where)
    if len(where) > 120:
        where = where[:60] + "…" + where[-40:]
    return f"{where + ': ' if where else ''}{what}; nothing was written"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: everything staged is removed on the way out."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _run(args: argparse.Namespace) -> int:
    from . import pipeline
    from .progress import TerminalProgress

    _sweep_leftovers(args)
    bar = TerminalProgress(args.command, quiet=args.quiet)
    try:
        if args.command == "mix":
            report = pipeline.mix_files(
                args.take,
                args.backing,
                args.output,
                style=args.style,
                sliders=_sliders(args),
                latency_ms=args.latency_ms,
                target_lufs=pipeline.DEFAULT_TARGET_LUFS if args.target_lufs is None else args.target_lufs,
                report_path=args.report,
                stems_dir=args.stems,
                plot_path=args.plot,
                overwrite=args.force,
                progress=bar,
                accept_alignment_guess=args.accept_alignment_guess,
                report_frames=args.report_frames,
                **_pitch_options(args),
            )
            out = args.output
        elif args.command == "analyze":
            plan = pipeline.analyze_files(
                args.take,
                args.backing,
                args.output,
                latency_ms=args.latency_ms,
                style=args.style,
                sliders=_sliders(args),
                target_lufs=pipeline.DEFAULT_TARGET_LUFS if args.target_lufs is None else args.target_lufs,
                overwrite=args.force,
                progress=bar,
                accept_alignment_guess=args.accept_alignment_guess,
                **_pitch_options(args),
            )
            report, out = plan.record, args.output
        elif args.command == "render":
            report = pipeline.render_plan(
                args.plan,
                args.output,
                style=args.style,
                sliders=_sliders(args),
                target_lufs=args.target_lufs,
                start_s=args.start,
                duration_s=args.duration,
                report_path=args.report,
                stems_dir=args.stems,
                plot_path=args.plot,
                overwrite=args.force,
                progress=bar,
                correction=args.correction,
                ornaments=args.ornaments,
                report_frames=args.report_frames,
            )
            out = args.output
        elif args.command == "correct":
            opts = _pitch_options(args)
            opts.pop("pitch")
            report = pipeline.correct_file(
                args.take,
                args.output,
                report_path=args.report,
                plot_path=args.plot,
                overwrite=args.force,
                progress=bar,
                report_frames=args.report_frames,
                **opts,
            )
            out = args.output
        elif args.command == "demo":
            report, out = _demo(args, bar)
        else:  # pragma: no cover - argparse guards this
            raise ConfigError(f"unknown command {args.command}")
    finally:
        bar.close()
    if not args.quiet:
        print(_summary(report, out))
    return 0


DEMO_MARKER = ".melisma-demo"


def _demo(args: argparse.Namespace, bar) -> tuple[dict[str, Any], str]:
    """Mix the bundled example into a folder of its own. Running it again replaces that folder's
    demo files (it carries a marker); a folder that was not made by the demo is never overwritten
    without --force.
    """
    from . import examples, pipeline

    out_dir = Path(args.output_dir)
    marker = out_dir / DEMO_MARKER
    if out_dir.exists() and any(out_dir.iterdir()) and not marker.exists() and not args.force:
        raise ConfigError(f"{out_dir}: exists and was not made by `melisma demo`; choose another folder with -o, or pass --force")
    out_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    mix = out_dir / "mix.m4a"
    report = pipeline.mix_files(
        examples.TAKE,
        examples.BACKING,
        mix,
        style=args.style,
        report_path=out_dir / "report.json",
        plot_path=out_dir / "mix.png",
        stems_dir=out_dir / "stems",
        overwrite=True,
        progress=bar,
    )
    if not args.quiet:
        print(f"demo: mixed the bundled example take ({examples.TAKE.name}) over {examples.BACKING.name}")
        print(f"      report {out_dir / 'report.json'}, picture {out_dir / 'mix.png'}, stems {out_dir / 'stems'}")
    return report, str(mix)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``melisma``; errors print one line and exit with the code the README lists."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "selftest":
        from .selftest import main as selftest_main

        return selftest_main()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if args.command == "batch":
            from .batch import main_batch

            return main_batch(args)
        return _run(args)
    except MelismaError as exc:
        print(f"melisma: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except _Terminated:
        print("melisma: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except ImportError as exc:
        # A C extension whose module set-up is cut by the signal reports "initialization failed"
        # with our _Terminated as its cause: that is still the SIGTERM, not a broken install.
        if not isinstance(exc.__cause__ or exc.__context__, _Terminated):
            raise
        print("melisma: terminated (SIGTERM); nothing was written", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("melisma: interrupted; nothing was written", file=sys.stderr)
        return 130
    except MemoryError:
        print("melisma: error: out of memory; try a shorter take or close other programs", file=sys.stderr)
        return 11
    except OSError as exc:  # the file system refused a write (full, too large, read-only...)
        print(f"melisma: error: {_os_error_message(exc, getattr(args, 'output', None))}", file=sys.stderr)
        return 3
    except RecursionError:
        print("melisma: error: an input is nested too deeply to read (a damaged or hostile file)", file=sys.stderr)
        return 6
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
