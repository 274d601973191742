"""Developer tools: corpus generation, example takes, benchmarks (not shipped with the firmware)."""
