"""Training-set builder and data-quality report tests, on hand-built session-log segments."""
