"""Run core_cases on the MicroPython unix port: prints ``PASS name`` / ``FAIL name: error`` lines.

MICROPYPATH must hold firmware/panel (or a folder of its .mpy files) and tests/panel.
"""

import core_cases

failed = 0
for name, case in core_cases.all_cases():
    try:
        case()
    except Exception as exc:  # report every case, never stop at the first
        failed += 1
        print(f"FAIL {name}: {type(exc).__name__} {exc}")
    else:
        print("PASS " + name)
print(f"DONE {failed} failed")
