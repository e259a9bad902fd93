"""One answer to "is the Hugging Face Hub off limits?", read the way huggingface_hub reads it.

``HF_HUB_OFFLINE`` is true when it is one of ``1``, ``ON``, ``YES``, ``TRUE`` (any case), as in
``huggingface_hub.constants``; ``HF_HUB_OFFLINE=no`` or ``0`` means online. ``PTT_OFFLINE`` (same values) is
the project's own switch for downloads that do not go through the Hub (clean-fid's Inception weights).

Example::

    from common.hub import hub_offline
    if hub_offline():
        print("skip the push")
"""

from __future__ import annotations

import os

__all__ = ["env_true", "hub_offline", "is_repo_id"]

_TRUE = frozenset({"1", "ON", "YES", "TRUE"})


def env_true(name: str) -> bool:
    """True when environment variable ``name`` holds 1/on/yes/true (any case)."""
    return os.environ.get(name, "").strip().upper() in _TRUE


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``PTT_OFFLINE`` says offline."""
    return env_true("HF_HUB_OFFLINE") or env_true("PTT_OFFLINE")


def is_repo_id(value: str | None) -> bool:
    """True for a Hub repo id of the form ``USER/NAME`` (or ``ORG/NAME``): one slash, both parts non-empty."""
    return isinstance(value, str) and value.count("/") == 1 and all(value.split("/"))
