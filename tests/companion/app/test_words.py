"""The app's words: every stage the engine reports reads as words, not an internal name."""

from __future__ import annotations

import pytest
from melisma.pipeline.options import ANALYSIS_WEIGHTS, RENDER_WEIGHTS
from melisma_companion.app import words


@pytest.mark.parametrize("stage", sorted({*ANALYSIS_WEIGHTS, *RENDER_WEIGHTS}))
def test_every_engine_stage_has_words(stage: str) -> None:
    said = words.stage_words(stage)
    # the fallback only swaps underscores for spaces: a stage the app does not know reads as its name
    assert said != stage.replace("_", " "), f"the app has no words for the engine's stage {stage!r}"
    assert "_" not in said
