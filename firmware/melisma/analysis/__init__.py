"""Analysis: pure functions on arrays (signal first, options keyword-only), in the style of librosa."""
