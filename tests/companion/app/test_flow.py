"""The whole flow on a real Kivy window (Xvfb) with simulated touches, against the real box code (Bumble
GATT peripheral, job queue, storage, the engine) over a Bumble virtual link: pick and send files (progress,
no re-send of what the box has, resume after a dropped link), the library (sizes, delete), one-tap Mix
(stages, progress, a drop mid-job), the result screen (pitch view drawn from the plan, plain-words summary),
sliders with a preview that plays, download (progress, resume), save as, play."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from melisma import protocol as p
from melisma.analysis.loudness import integrated_lufs
from melisma.audio_io import load_audio
from melisma_companion.app import words


async def _send(run, button_id: str, path) -> None:
    lib = run.screen("library")
    await run.tap(lib.ids[button_id])
    await run.until(lambda: run.app.popup is not None and run.app.popup.chooser is not None, what="the file chooser")
    await run.choose_file(path)


def test_send_mix_shape_keep(app_run, run_async, short_examples, tmp_path):
    take, backing = short_examples

    async def main():
        async with app_run(passkey=True) as run:
            await run.connect_and_pair()
            lib = run.screen("library")
            assert lib.ids.entries.children == []  # an empty box

            # -- send the take, with the link dropped a third of the way: it resumes, not restarts
            dropped = []

            def watch(state):
                if state.uploading and not dropped and state.upload_done > state.upload_total // 3:
                    dropped.append(state.upload_done)
                    run.background(run.drop_link())

            run.state.library.observe(watch)
            percents = []
            run.state.library.observe(lambda s: s.uploading and percents.append(lib.ids.upload_bar.value))
            await _send(run, "pick_take", take)
            await run.until(lambda: run.state.library.take == "my-take.m4a", what="the take on the box", timeout=60)
            assert dropped, "the link was never dropped"
            assert run.state.library.upload_resumed_from >= dropped[0] > 0
            assert percents == sorted(percents) or max(percents) > 30  # the bar moved up (a resume keeps its place)
            stored = run.demo.box.storage.path(p.FileKind.TAKE, "my-take.m4a")
            assert stored.read_bytes() == take.read_bytes()
            # -- the backing, then the same backing again: not sent twice
            await _send(run, "pick_backing", backing)
            await run.until(lambda: run.state.library.backing == "backing.m4a", what="the backing on the box")
            uploads_before = len(run.demo.box.storage.list())
            await _send(run, "pick_backing", backing)
            await run.until(lambda: "already on the box" in run.status_text, what="'already on the box'")
            assert len(run.demo.box.storage.list()) == uploads_before
            # -- the library with sizes
            await run.until(lambda: len(lib.ids.entries.children) == 2, what="two files in the library")
            texts = [row.children[-1].text for row in lib.ids.entries.children]
            assert any("my-take.m4a" in t and words.size_words(take.stat().st_size) in t for t in texts)
            assert "Take: my-take.m4a" in lib.ids.chosen.text and "Backing: backing.m4a" in lib.ids.chosen.text

            # -- one tap: Mix (UK pop), stages and progress live, a dropped link mid-job
            await run.tap(run.app.root.ids.nav_mix)
            mix = run.screen("mix")
            await run.tap(mix.ids.style_western)
            assert mix.ids.style_western.state == "down" and run.state.job.style is p.Style.WESTERN
            stages, bars = [], []
            run.state.job.observe(lambda s: stages.append(mix.ids.stage_label.text))
            run.state.job.observe(lambda s: bars.append(mix.ids.job_bar.value))
            mid_drop = []

            def drop_mid_job(state):
                if state.step == "analyze" and state.progress > 0.2 and not mid_drop:
                    mid_drop.append(state.progress)
                    run.background(run.drop_link())

            run.state.job.observe(drop_mid_job)
            await run.tap(mix.ids.mix_button)
            await run.until(lambda: mix.ids.mix_button.disabled, what="the Mix button to show the job running")
            await run.until(lambda: run.state.job.done, what="the mix to finish", timeout=120)
            assert mid_drop, "the link was never dropped during the job"
            assert any(t.startswith("Step 1 of 2, analysing") for t in stages)
            assert any(t.startswith("Step 2 of 2, rendering") for t in stages)
            assert bars[-1] == 100 and max(bars[:-1]) > 10
            assert mix.ids.stage_label.text == "Your mix is ready."
            assert run.demo.box.controls.style is p.Style.WESTERN
            names = [e.name for e in run.demo.box.storage.list(p.FileKind.MIX)]
            assert names == ["my-take-mix.mp3"]

            # -- the result: the pitch view draws the plan's notes; the summary in words
            await run.tap(run.app.root.ids.nav_result)
            result = run.screen("result")
            view = result.ids.pitch_view
            await run.until(lambda: view.drawn_notes, what="notes drawn")
            plan = json.loads(run.demo.box.storage.path(p.FileKind.PLAN, "my-take.json").read_text())
            notes = plan["pitch"]["notes"]
            assert len(notes) >= 3 and len(view.drawn_notes) == len(notes) == len(view.drawn_targets)
            lay = view.layout
            for rect, target, note in zip(view.drawn_notes, view.drawn_targets, notes, strict=True):
                x, y = rect.pos
                w, h = rect.size
                assert abs(lay.time_at(x) - note["start_s"]) < 0.01 and abs(lay.time_at(x + w) - note["end_s"]) < 0.01
                assert abs(lay.midi_at(y + h / 2) - note["midi"]) < 0.01
                assert abs(lay.midi_at(target.points[1]) - note["target_midi"]) < 0.01
                assert view.x <= x and x + w <= view.right + 1  # inside the widget
            assert len(view.drawn_ornaments) == len(plan["pitch"]["ornaments"])
            assert {g for g, _ in view.drawn_ornaments} <= {"vibrato", "slide", "grace", "trill", "drift"}
            assert view.drawn_sung and view.drawn_corrected
            summary = result.ids.summary.text
            assert "ms late" in summary and "Key:" in summary and "notes were moved" in summary
            assert "Loudness" in summary and "Kept as you sang them" in summary
            # the loudness is the written mix's own, from the render report the box keeps beside the plan
            kept = json.loads(run.demo.box.storage.path(p.FileKind.PLAN, "my-take.report.json").read_text())
            loud = kept["loudness"]
            assert run.state.result.report is not None and run.state.result.report["loudness"] == loud
            mix_file = run.demo.box.storage.path(p.FileKind.MIX, "my-take-mix.mp3")
            measured = integrated_lufs(load_audio(mix_file)[0], sr=load_audio(mix_file)[1])
            assert abs(measured - loud["integrated_lufs"]) < 0.05  # what the report says is the file's own
            assert f"Loudness of your mix: {loud['integrated_lufs']:.1f} LUFS" in summary
            assert f"true peak {loud['true_peak_dbtp']:.1f} dBTP" in summary and "Loudness target" not in summary
            legend = [w.text for w in result.ids.legend.children]
            assert "sung" in legend and "corrected" in legend

            # -- shape: drag the reverb slider, let go: a preview renders on the box and plays
            await run.tap(run.app.root.ids.nav_shape)
            shape = run.screen("shape")
            slider = shape.ids.slider_reverb
            await run.drag_slider(slider, 0.6)
            await run.until(lambda: run.state.shape.preview == "playing", what="the preview playing", timeout=60)
            value = run.state.shape.sliders["reverb"]
            assert 0.45 < value < 0.75
            assert shape.ids.value_reverb.text == words.slider_value_text(value)
            assert run.demo.box.controls.sliders["reverb"] == value
            assert "Playing a 2.5 s preview" in shape.ids.preview_label.text
            assert run.app.companion.player.playing
            timings = run.state.shape.timings
            assert set(timings) >= {"render_s", "transfer_s", "start_s", "total_s"}
            preview = run.demo.box.storage.path(p.FileKind.PREVIEW, "preview.ogg")
            assert timings["bytes"] == preview.stat().st_size
            # the box encodes previews at 48 kbit/s Opus: 2.5 s is ~16 kB (the 128 kbit/s mix rate would be ~40 kB)
            assert timings["bytes"] < 2.5 * 48_000 / 8 * 1.5

            # -- keep: download (re-rendered with the new reverb), a drop mid-download resumes
            await run.tap(run.app.root.ids.nav_keep)
            keep = run.screen("keep")
            drops = []

            def drop_download(state):
                if state.downloading and state.total and state.done > state.total // 3 and not drops:
                    drops.append(state.done)
                    run.background(run.drop_link())

            run.state.keep.observe(drop_download)
            await run.tap(keep.ids.download_button)
            await run.until(lambda: run.state.keep.local_path, what="the mix downloaded", timeout=120)
            assert drops and run.state.keep.resumed_from >= drops[0] > 0
            local = run.state.keep.local_path
            box_mix = run.demo.box.storage.path(p.FileKind.MIX, "my-take-mix.mp3")
            assert hashlib.sha256(Path(local).read_bytes()).digest() == hashlib.sha256(box_mix.read_bytes()).digest()
            assert keep.ids.download_bar.value == 100 and not keep.ids.save_button.disabled
            # save as: a chooser, a name, Save; never overwrites
            await run.tap(keep.ids.save_button)
            popup = run.app.popup
            popup.ids.filename.text = "my song"
            await run.tap(popup.ids.ok)
            saved = run.save_dir / "my song.mp3"
            await run.until(lambda: saved.exists(), what="the saved mix")
            assert saved.read_bytes() == box_mix.read_bytes()
            await run.tap(keep.ids.save_button)
            run.app.popup.ids.filename.text = "my song"
            await run.tap(run.app.popup.ids.ok)
            await run.until(lambda: "already exists" in run.status_text, what="the refusal to overwrite")
            # play
            await run.tap(keep.ids.play_button)
            await run.until(lambda: keep.ids.play_button.text == "Stop", what="the mix playing")
            await run.tap(keep.ids.play_button)
            await run.until(lambda: keep.ids.play_button.text == "Play", what="the mix stopped")

            # -- delete from the library
            await run.tap(run.app.root.ids.nav_library)
            await run.until(lambda: "my-take.report.json" in [e.name for e in run.state.library.entries],
                            what="the render report listed by the box")
            shown = {r.entry.name: r.children[-1].text for r in lib.ids.entries.children}
            # the render report is part of its plan: no row of its own, the plan's row says it is kept
            assert "my-take.report.json" not in shown and shown["my-take.json"].endswith("+ render report")
            row = next(r for r in lib.ids.entries.children if r.entry.name == "my-take-mix.mp3")
            await run.tap(row.children[0])
            await run.until(lambda: "my-take-mix.mp3" not in [e.name for e in run.state.library.entries],
                            what="the mix deleted")
            assert not box_mix.exists()

    run_async(main(), 400)


def test_cancel_and_a_job_picked_up_after_the_app_restarts(app_run, run_async):
    async def first():
        async with app_run(passkey=False, preload=True) as run:
            await run.connect_and_pair()
            await run.until(lambda: run.state.library.take and run.state.library.backing,
                            what="the demo box's examples chosen")
            await run.tap(run.app.root.ids.nav_mix)
            mix = run.screen("mix")
            await run.tap(mix.ids.mix_button)
            await run.until(lambda: not mix.ids.cancel_button.disabled, what="Cancel enabled")
            await run.tap(mix.ids.cancel_button)
            await run.until(lambda: "cancelled" in mix.ids.stage_label.text.lower(), what="the cancel message")
            assert not mix.ids.mix_button.disabled and not run.state.job.running
            assert run.demo.box.storage.list(p.FileKind.MIX) == []
            # start again, and close the app while the box is working
            await run.tap(mix.ids.mix_button)
            await run.until(lambda: run.state.job.step == "analyze", what="the analysis running")
            return run.state.job.job_id

    job_id = run_async(first())
    assert job_id

    async def second():  # note: the demo box restarts with the app here, so the job is asked for again
        async with app_run(passkey=False, preload=True) as run:
            await run.until(lambda: run.state.job.done, what="the mix picked up and finished", timeout=180)
            assert run.screen("mix").ids.stage_label.text == "Your mix is ready."
            assert [e.name for e in run.demo.box.storage.list(p.FileKind.MIX)] == ["my-take-mix.mp3"]
    run_async(second(), 300)
