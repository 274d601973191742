r"""``melisma batch MANIFEST``: the one-click mix for many takes, on every core or on a Ray cluster.

A manifest lists one mix per row: ``take``, ``backing``, ``settings`` and ``output``, as CSV (a
header row naming the columns; ``settings`` is a JSON object, e.g. ``{"style": "cpop",
"sliders": {"reverb": 0.3}}``, or empty) or as JSON Lines (one object per line with the same
keys; ``settings`` an object). Relative paths are relative to the manifest's folder.
``settings`` takes the options of :func:`melisma.pipeline.mix_files`: ``style``, ``sliders``,
``latency_ms``, ``target_lufs``, ``pitch``, ``key``, ``scale``, ``correction``, ``ornaments``.

Rows run in a pool of worker processes (one per core by default) or, with ``ray_address``, as
Ray tasks (``pip install 'melisma[batch]'``). Each output is written atomically by the engine
(a staged file moved into place), so an interrupted batch leaves no half-written mix. What
finished is journaled, one JSON line per attempt, in ``<manifest>.state.jsonl``: a re-run skips
the rows that are done (same row, output still there) and runs the rest. A failed row is tried
again up to ``retries`` more times, unless its error cannot change by trying again (a bad option,
an unreadable or unusable file); its last error is reported.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "jobs.csv").write_text('take,backing,settings,output\na.m4a,b.m4a,"{""style"": ""cpop""}",out/a.m4a\n')
>>> [(r.take.name, r.settings, r.output.name) for r in read_manifest(folder / "jobs.csv")]
[('a.m4a', {'style': 'cpop'}, 'a.m4a')]
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AudioContentError, AudioIOError, ConfigError, MelismaError

COLUMNS = ("take", "backing", "settings", "output")
#: Options a row's ``settings`` may give (those of :func:`melisma.pipeline.mix_files`).
SETTINGS_KEYS = ("style", "sliders", "latency_ms", "target_lufs", "pitch", "key", "scale", "correction", "ornaments")
DEFAULT_RETRIES = 2
STATE_SUFFIX = ".state.jsonl"


class BatchError(MelismaError):
    """A manifest that cannot be run (missing columns, bad settings, unreadable file)."""

    exit_code = 13


@dataclass(frozen=True)
class Row:
    """One mix of a manifest, paths resolved."""

    index: int  # 1-based, as a person counts rows (the header is not a row)
    take: Path
    backing: Path
    settings: dict[str, Any]
    output: Path

    @property
    def key(self) -> str:
        """Names this row's work: the same key on a re-run means the same mix."""
        payload = json.dumps([str(self.take), str(self.backing), self.settings, str(self.output)], sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:16]

    def to_task(self) -> dict[str, Any]:
        """What a worker needs (plain values, for any process or machine)."""
        return {"index": self.index, "take": str(self.take), "backing": str(self.backing), "settings": self.settings,
                "output": str(self.output)}


@dataclass
class BatchResult:
    """What a batch did: rows done now, skipped (done before), failed (with their last error)."""

    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 1
    backend: str = "processes"

    @property
    def takes_per_minute(self) -> float:
        """Throughput of the rows done in this run."""
        return 60.0 * len(self.done) / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON values."""
        return {"done": self.done, "skipped": self.skipped, "failed": {str(k): v for k, v in self.failed.items()},
                "attempts": {str(k): v for k, v in self.attempts.items()}, "seconds": round(self.seconds, 3),
                "workers": self.workers, "backend": self.backend, "takes_per_minute": round(self.takes_per_minute, 3)}


def _settings(value: Any, where: str) -> dict[str, Any]:
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise BatchError(f"{where}: settings {value!r} is not JSON ({exc.msg}); give an object like "
                             '{"style": "cpop", "sliders": {"reverb": 0.3}} or leave it empty') from None
    if not isinstance(value, dict):
        raise BatchError(f"{where}: settings must be an object like {{\"style\": \"cpop\"}}, got {value!r}")
    unknown = sorted(set(value) - set(SETTINGS_KEYS))
    if unknown:
        raise BatchError(f"{where}: unknown settings {', '.join(unknown)}; use {', '.join(SETTINGS_KEYS)}")
    return value


def _raw_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BatchError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise BatchError(f"{path}:{number}: each line must be a JSON object with {', '.join(COLUMNS)}")
            yield f"{path}:{number}", obj
        return
    import csv

    reader = csv.DictReader(text.splitlines())
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise BatchError(f"{path}: the header row lacks {', '.join(missing)}; the columns are {', '.join(COLUMNS)} "
                         "(or give a .jsonl file)")
    for number, obj in enumerate(reader, 2):
        if not any((v or "").strip() for v in obj.values() if isinstance(v, str)):
            continue
        yield f"{path}:{number}", obj


def read_manifest(path: str | os.PathLike) -> list[Row]:
    """The rows of a CSV or JSONL manifest, checked (columns, settings, distinct outputs) before any work."""
    path = Path(path)
    try:
        raw = list(_raw_rows(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"{path}: cannot read the manifest ({exc}); give a CSV or JSONL file") from None
    if not raw:
        raise BatchError(f"{path}: the manifest has no rows; give one row per mix: {', '.join(COLUMNS)}")
    base = path.resolve().parent
    rows: list[Row] = []
    outputs: dict[Path, str] = {}
    for index, (where, obj) in enumerate(raw, 1):
        for column in ("take", "backing", "output"):
            if not isinstance(obj.get(column), str) or not obj[column].strip():
                raise BatchError(f"{where}: '{column}' is missing; every row needs {', '.join(COLUMNS[:2])} and output")
        take, backing, output = ((base / obj[c].strip()).resolve() for c in ("take", "backing", "output"))
        if output in outputs:
            raise BatchError(f"{where}: output {output} is also the output of {outputs[output]}; give each row its own")
        outputs[output] = where
        rows.append(Row(index, take, backing, _settings(obj.get("settings"), where), output))
    return rows


def state_path(manifest: str | os.PathLike) -> Path:
    """Where a manifest's journal lives: beside it, ``<manifest>.state.jsonl``."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.name + STATE_SUFFIX)


def finished_keys(state: Path) -> set[str]:
    """Keys of the rows the journal says are done (a torn last line, from a kill, is ignored)."""
    done: set[str] = set()
    try:
        lines = state.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return done
    for line in lines:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and entry.get("status") == "done" and isinstance(entry.get("key"), str):
            done.add(entry["key"])
    return done


def _journal(state: Path, entry: dict[str, Any]) -> None:
    with open(state, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def mix_row(task: dict[str, Any]) -> dict[str, Any]:
    """Run one row (in a worker process or a Ray task); never raises: returns what happened."""
    start = time.perf_counter()
    try:
        from . import pipeline

        settings = dict(task["settings"])
        output = Path(task["output"])
        output.parent.mkdir(parents=True, exist_ok=True)
        report = pipeline.mix_files(task["take"], task["backing"], output, overwrite=True, **settings)
        loudness = report.get("loudness", {})
        return {"ok": True, "seconds": time.perf_counter() - start, "pid": os.getpid(),
                "lufs": loudness.get("integrated_lufs"), "true_peak_dbtp": loudness.get("true_peak_dbtp")}
    except MelismaError as exc:
        permanent = isinstance(exc, (ConfigError, AudioIOError, AudioContentError, BatchError))
        return {"ok": False, "error": str(exc), "kind": type(exc).__name__, "permanent": permanent,
                "seconds": time.perf_counter() - start}
    except Exception as exc:  # a bug or a crash in one row must not stop the others
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "kind": type(exc).__name__, "permanent": False,
                "seconds": time.perf_counter() - start, "traceback": traceback.format_exc(limit=5)}


Runner = Callable[[list[dict[str, Any]]], Iterator[tuple[dict[str, Any], dict[str, Any]]]]


def _process_runner(workers: int) -> Runner:
    import concurrent.futures as futures
    import multiprocessing

    def run(tasks: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        # spawn: workers start clean (no threads or locks copied from this process)
        context = multiprocessing.get_context("spawn")
        with futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            pending = {pool.submit(mix_row, t): t for t in tasks}
            for done in futures.as_completed(pending):
                task = pending[done]
                try:
                    result = done.result()
                except Exception as exc:  # the worker died (killed, out of memory): the pool is broken
                    result = {"ok": False, "error": f"worker process died ({type(exc).__name__}: {exc})",
                              "kind": type(exc).__name__, "permanent": False, "seconds": 0.0}
                yield task, result

    return run


#: Ray's switch for a single-machine instance: with it off, Ray keeps every address on the loopback
#: interface (127.0.0.1), as it does on macOS and Windows; ``--ray local`` sets it before importing Ray.
RAY_LOOPBACK_ENV = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _ray_runner(address: str, workers: int) -> Runner:
    import sys

    if address == "local" and "ray" not in sys.modules:
        os.environ.setdefault(*RAY_LOOPBACK_ENV)
    try:
        import ray
    except ImportError:
        raise BatchError("--ray needs Ray: pip install 'melisma[batch]' (or run without --ray on this machine's cores)") \
            from None
    if not ray.is_initialized():
        if address == "local":  # a Ray instance inside this process, on this machine only
            ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except Exception as exc:
                raise BatchError(f"--ray {address}: cannot join the Ray cluster ({exc}); give 'auto', "
                                 "'ray://HEAD:10001' or 'local'") from None
    remote = ray.remote(num_cpus=1, max_retries=0)(mix_row)

    def run(tasks: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        refs = {remote.remote(t): t for t in tasks}
        waiting = list(refs)
        while waiting:
            ready, waiting = ray.wait(waiting, num_returns=1)
            task = refs[ready[0]]
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # the task's worker died
                result = {"ok": False, "error": f"Ray task failed ({type(exc).__name__}: {exc})",
                          "kind": type(exc).__name__, "permanent": False, "seconds": 0.0}
            yield task, result

    return run


def _sweep_leftovers(rows: list[Row]) -> None:
    """Remove what a killed earlier run left beside the outputs still to make: staged files of
    those outputs (``.NAME.*.part*``) and the engine's work folders (``.melisma-work-*``). A
    batch owns its output folders while it runs (two batches must not share one).
    """
    import shutil

    for folder in {row.output.parent for row in rows}:
        if folder.is_dir():
            for work in folder.glob(".melisma-work-*"):
                shutil.rmtree(work, ignore_errors=True)
    for row in rows:
        if row.output.parent.is_dir():
            for staged in row.output.parent.glob(f".{row.output.name}.*.part*"):
                staged.unlink(missing_ok=True)


def run_batch(
    manifest: str | os.PathLike,
    *,
    workers: int | None = None,
    retries: int = DEFAULT_RETRIES,
    ray_address: str | None = None,
    force: bool = False,
    state: str | os.PathLike | None = None,
    on_row: Callable[[Row, dict[str, Any]], None] | None = None,
    runner: Runner | None = None,
) -> BatchResult:
    """Run every row of ``manifest`` not done before; returns what happened.

    Parameters
    ----------
    manifest : CSV or JSONL file (see the module docstring).
    workers : worker processes (default: every core; with Ray, the CPUs a local instance gets).
    retries : how many more times a failed row is tried (errors that trying again cannot change,
        a bad option or an unusable file, are not retried).
    ray_address : run rows as Ray tasks on this cluster (``auto``, ``ray://HEAD:10001``) or on a
        Ray instance started in this process (``local``).
    force : redo rows already done.
    state : the journal (default ``<manifest>.state.jsonl``).
    on_row : called with each row and its result as it finishes (progress).
    runner : internal (tests): runs a list of tasks, yielding ``(task, result)`` as each ends.
    """
    rows = read_manifest(manifest)
    if not isinstance(retries, int) or not 0 <= retries <= 10:
        raise BatchError(f"retries={retries!r} is out of range; use 0 to 10")
    workers = int(workers or os.cpu_count() or 1)
    if workers < 1:
        raise BatchError(f"workers={workers} must be at least 1")
    state = Path(state) if state is not None else state_path(manifest)
    finished = set() if force else finished_keys(state)
    result = BatchResult(workers=workers, backend="ray" if ray_address else "processes")
    todo = []
    for row in rows:
        if row.key in finished and row.output.exists():
            result.skipped.append(row.index)
        else:
            todo.append(row)
    _sweep_leftovers(todo)
    if runner is None and todo:
        runner = _ray_runner(ray_address, workers) if ray_address else _process_runner(min(workers, len(todo)))
    by_index = {row.index: row for row in todo}
    start = time.perf_counter()
    attempt = 0
    while todo and attempt <= retries:
        attempt += 1
        again: list[Row] = []
        for task, outcome in runner([r.to_task() for r in todo]):  # type: ignore[misc]
            row = by_index[task["index"]]
            result.attempts[row.index] = attempt
            entry = {"row": row.index, "key": row.key, "output": str(row.output), "attempt": attempt,
                     "seconds": round(float(outcome.get("seconds", 0.0)), 3), "time": time.time()}
            if outcome.get("ok"):
                entry["status"] = "done"
                result.done.append(row.index)
                result.failed.pop(row.index, None)
            else:
                entry.update(status="failed", error=outcome.get("error"), kind=outcome.get("kind"))
                result.failed[row.index] = str(outcome.get("error"))
                if not outcome.get("permanent"):
                    again.append(row)
            _journal(state, entry)
            if on_row is not None:
                on_row(row, outcome)
        todo = again
    result.seconds = time.perf_counter() - start
    result.done.sort()
    return result


def add_parser(sub: Any) -> None:
    """The ``melisma batch`` subcommand (argparse sub-parsers ``sub``)."""
    p = sub.add_parser("batch", help="mix many takes from a manifest (CSV or JSONL), on every core or a Ray cluster")
    p.add_argument("manifest", metavar="MANIFEST", help="rows of take, backing, settings (JSON), output; .csv or .jsonl")
    p.add_argument("--workers", type=int, default=None, metavar="N", help="worker processes (default: every core)")
    p.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                   help=f"tries again per failed row (default {DEFAULT_RETRIES}; bad options or files are not retried)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (auto, ray://HEAD:10001) or 'local'; needs melisma[batch]")
    p.add_argument("--force", action="store_true", help="redo rows already done")
    p.add_argument("--report", default=None, metavar="RESULT.json", help="write the batch result (JSON)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per row")


def main_batch(args: Any) -> int:
    """Run ``melisma batch``; 0 when every row is done, 13 when some failed (each named with its error)."""
    import sys

    from .audio_io import atomic_write_text

    def show(row: Row, outcome: dict[str, Any]) -> None:
        if args.quiet:
            return
        if outcome.get("ok"):
            print(f"row {row.index}: done {row.output} ({outcome.get('seconds', 0):.1f} s)", flush=True)
        else:
            print(f"row {row.index}: failed: {outcome.get('error')}", flush=True)

    result = run_batch(args.manifest, workers=args.workers, retries=args.retries, ray_address=args.ray, force=args.force,
                       on_row=show)
    if args.report:
        atomic_write_text(args.report, json.dumps(result.to_dict(), indent=1) + "\n", overwrite=True)
    print(f"batch: {len(result.done)} done, {len(result.skipped)} already done, {len(result.failed)} failed "
          f"in {result.seconds:.1f} s ({result.takes_per_minute:.1f} takes/min, {result.workers} "
          f"{'Ray CPUs' if result.backend == 'ray' else 'workers'})")
    for index, error in sorted(result.failed.items()):
        print(f"melisma: error: row {index}: {error} (after {result.attempts.get(index, 1)} attempt(s))", file=sys.stderr)
    return BatchError.exit_code if result.failed else 0
