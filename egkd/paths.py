"""Where egkd keeps its caches (tokenized data, teacher outputs and explanations)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$EGKD_CACHE`` if set, else ``~/.cache/egkd``; every entry in it is keyed, so it is safe to share."""
    root = os.environ.get("EGKD_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "egkd"
