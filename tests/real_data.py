"""Where the real benchmark files are: $MATHJAX_DATA_DIR, else ../shared/data beside the checkout.

Tests that read them carry the `realdata` marker and skip only when the directory is absent.
"""

import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("MATHJAX_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def require_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"no benchmark data directory at {DATA} (set MATHJAX_DATA_DIR)")
    return DATA
