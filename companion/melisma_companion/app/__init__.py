"""The Melisma companion app (Kivy): find and pair a box, hand it a take, get a mix, shape it, keep it.

Layout of the package (only :mod:`melisma.protocol` and the client come from the firmware side;
:mod:`melisma_companion.app.demo` is the one exception, the box half of ``melisma-app --demo``):

* :mod:`.state` - plain observable classes holding what the app knows; the screens observe them.
* :mod:`.controller` - the steps (scan, connect, pair, upload, mix, preview, download, save) as
  coroutines on the one asyncio loop that Kivy and bleak share.
* :mod:`.words` - every sentence the singer reads: errors, slider labels, the plan summary.
* :mod:`.pitch` - the pitch picture's geometry from a plan (no Kivy), drawn by :mod:`.ui`.
* :mod:`.links` - where the bleak backend comes from (the OS stack, or a Bumble central).
* :mod:`.permissions` - Android's Bluetooth runtime permissions.
* :mod:`.ui` and ``kv/`` - the Kivy screens; :mod:`.main` - the ``melisma-app`` command.
"""
