"""Rendering: everything that reads a plan and produces audio (clean-up, correction, chain, master)."""
