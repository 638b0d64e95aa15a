"""The loop as stages in one YAML (spec), run in order with resume (runner), recorded with
provenance in RUN_DIR/manifest.json (manifest, hashing)."""
