"""Find, version check, pair (passkey entry, a wrong passkey, Just Works), reconnect when bonded: on a real
Kivy window (Xvfb), against the real box code over a Bumble virtual link."""

from __future__ import annotations

from melisma import protocol as p


def test_scan_pair_with_passkey_wrong_then_right_and_reconnect_by_itself(app_run, run_async, tmp_path):
    async def first_run():
        async with app_run(passkey=True) as run:
            find = run.screen("find")
            await run.until(lambda: find.ids.box_list.children, what="a box in the scan list")
            rows = [w.text for w in find.ids.box_list.children]
            assert len(rows) == 1
            assert rows[0].startswith(run.demo.box.name) and run.demo.box.name.startswith("Melisma-")
            assert "signal" in rows[0] and "dBm" in rows[0]
            await run.tap(find.ids.box_list.children[0])
            pair = run.screen("pair")
            await run.until(lambda: run.current == "pair" and not pair.ids.pair_button.disabled, what="pair screen")
            assert "pair button" in pair.ids.message.text
            assert run.state.link.box_version == p.PROTOCOL_VERSION
            assert pair.ids.passkey_input.disabled  # not asked before the box wants one
            # a wrong passkey: the app says so and lets the user try again
            await run.tap(pair.ids.pair_button)
            await run.until(lambda: not pair.ids.passkey_input.disabled, what="the passkey field")
            assert "passkey" in pair.ids.message.text
            wrong = (run.demo.last_passkey + 1) % 1_000_000
            await run.type_text(pair.ids.passkey_input, f"{wrong:06d}")
            await run.tap(pair.ids.passkey_ok)
            await run.until(lambda: "did not match" in pair.ids.message.text, what="the wrong-passkey message")
            assert run.current == "pair" and not run.state.link.bonded
            assert not pair.ids.pair_button.disabled
            # try again with the number the box shows now
            await run.tap(pair.ids.pair_button)
            await run.until(lambda: not pair.ids.passkey_input.disabled, what="the passkey field again")
            await run.type_text(pair.ids.passkey_input, f"{run.demo.last_passkey:06d}")
            await run.tap(pair.ids.passkey_ok)
            await run.until(lambda: run.current == "library", what="the library after pairing")
            assert run.state.link.bonded
            assert (
                f"Connected to {run.demo.box.name} (protocol {p.PROTOCOL_VERSION[0]}.{p.PROTOCOL_VERSION[1]})" in run.status_text
            )
            assert not run.app.root.ids.nav_library.disabled and not run.app.root.ids.nav_mix.disabled
            return run.demo.box.name

    name = run_async(first_run())

    async def second_run():  # the next start: the bonded box reconnects with no scan and no pairing
        async with app_run(passkey=True) as run:
            await run.until(lambda: run.current == "library" and run.state.link.phase == "ready", what="reconnecting by itself")
            assert run.state.link.box_name == name and run.state.link.bonded
            assert run.state.link.boxes == []  # it did not need to scan
            assert run.demo.last_passkey is None  # and the box was not asked to pair again

    run_async(second_run())


def test_just_works_pairing_asks_no_passkey(app_run, run_async):
    async def main():
        async with app_run(passkey=False) as run:
            await run.connect_and_pair()
            pair = run.screen("pair")
            assert pair.ids.passkey_row.opacity == 0 and run.demo.last_passkey is None
            assert run.state.link.bonded

    run_async(main())


def test_closed_pairing_window_says_press_the_button(app_run, run_async):
    async def main():
        async with app_run(passkey=False) as run:
            run.demo.box.pairing_window.close()
            find = run.screen("find")
            await run.until(lambda: find.ids.box_list.children, what="a box in the scan list")
            await run.tap(find.ids.box_list.children[0])
            pair = run.screen("pair")
            await run.until(lambda: not pair.ids.pair_button.disabled, what="the pair screen")
            await run.tap(pair.ids.pair_button)
            await run.until(lambda: "not in pairing mode" in pair.ids.message.text, what="the closed-window message")
            # the user presses the box's button and tries again
            await run.tap(pair.ids.demo_pair_button)
            await run.tap(pair.ids.pair_button)
            await run.until(lambda: run.current == "library", what="the library after pairing")

    run_async(main())


def test_other_protocol_version_says_which_side_to_update(app_run, run_async):
    async def main():
        async with app_run(passkey=False, box_version=(2, 0)) as run:
            find = run.screen("find")
            await run.until(lambda: find.ids.box_list.children, what="a box in the scan list")
            await run.tap(find.ids.box_list.children[0])
            await run.until(lambda: "Update the Melisma app" in find.ids.message.text, what="the version message")
            assert f"box protocol 2.0, app {p.PROTOCOL_VERSION[0]}.{p.PROTOCOL_VERSION[1]}" in find.ids.message.text
            assert run.current == "find" and not run.state.link.bonded
            assert "Traceback" not in run.status_text and "Update the Melisma app" in run.status_text

    run_async(main())
