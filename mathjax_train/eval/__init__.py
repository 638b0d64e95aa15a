"""GSM8K / MATH evaluation: datasets, completion sources, grading into result rows, metrics
(accuracy, pass@k, maj@k, per-level/per-subject tables) and reports (JSON, Markdown, PNG)."""
