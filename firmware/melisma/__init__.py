"""Melisma: a pocket karaoke mixing box.

The engine analyzes a singer's take against a backing track once (a *plan*) and renders
the finished mix from that plan as often as the sliders move.
"""

__version__ = "0.1.0"
