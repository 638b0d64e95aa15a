"""Device mesh, logical-axis rules, multi-host start-up and per-host batches."""
