"""The Hugging Face Hub as every stage meets it: "is it off limits?", "is this a repo id?", and one error path.

:class:`PushError` is the one error of a push (``ptt-curate push``, ``ptt-push``, the trainer's pushes): one line
that says why and what to do. :func:`hub_token` stops offline or without a token; :func:`hub_errors` turns
whatever a Hub call raises into that one line, with the token scrubbed from it.

``HF_HUB_OFFLINE`` is true when it is one of ``1``, ``ON``, ``YES``, ``TRUE`` (any case), as in
``huggingface_hub.constants``; ``HF_HUB_OFFLINE=no`` or ``0`` means online. ``PTT_OFFLINE`` (same values) is
the project's own switch for downloads that do not go through the Hub (clean-fid's Inception weights).

Example::

    from common.hub import PushError, hub_errors, hub_offline, hub_token
    if hub_offline():
        print("skip the push")
    else:
        token = hub_token()                   # PushError: no token
        with hub_errors("me/faces", token):   # PushError: the Hub refused the token, answered an error, ...
            ...                               # HfApi(token=token).create_repo("me/faces", exist_ok=True)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PushError", "env_true", "hub_errors", "hub_offline", "hub_token", "is_repo_id", "require_repo_id"]

OFFLINE = (
    "HF_HUB_OFFLINE (or PTT_OFFLINE) is set, so nothing can be pushed; unset it on a machine that reaches the Hub"
)
LOGIN_HINT = "run `hf auth login` (or `huggingface-cli login`) or set HF_TOKEN to a token with write access"
NO_TOKEN = f"no Hugging Face token: {LOGIN_HINT}"


class PushError(RuntimeError):
    """A push cannot go ahead (bad input, offline, no token, a Hub or network error); the message says what to do."""


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


def require_repo_id(repo_id: str, option: str = "--repo") -> str:
    """``repo_id`` when it is ``USER/NAME``, else a :class:`PushError` naming ``option``."""
    if not is_repo_id(repo_id):
        raise PushError(f"{option} {repo_id!r}: give it as USER/NAME (or ORG/NAME)")
    return repo_id


def hub_token() -> str:
    """The Hugging Face token (``hf auth login`` or ``HF_TOKEN``); a :class:`PushError` offline or without one."""
    if hub_offline():
        raise PushError(OFFLINE)
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PushError(NO_TOKEN)
    return token


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, ConnectionError)
    for mod, name in (("httpx", "TransportError"), ("httpx2", "TransportError"), ("requests", "RequestException")):
        try:  # whichever HTTP client this huggingface_hub uses
            errors += (getattr(importlib.import_module(mod), name),)
        except (ImportError, AttributeError):
            pass
    return errors


@contextmanager
def hub_errors(repo_id: str, token: str | None = None) -> Iterator[None]:
    """Turn any failure of the Hub calls inside the block into one :class:`PushError` line about ``repo_id``:
    no token, offline, the token refused (HTTP 401/403), the Hub's own error, the network. ``token`` never shows."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    def line(text: str) -> PushError:
        return PushError(f"push to {repo_id} failed: {text.replace(token, '***') if token else text}")

    try:
        yield
    except PushError:
        raise
    except LocalTokenNotFoundError:
        raise PushError(NO_TOKEN) from None
    except OfflineModeIsEnabled:
        raise PushError(OFFLINE) from None
    except Exception as exc:  # noqa: BLE001 - any Hub or network failure becomes one line
        code = getattr(getattr(exc, "response", None), "status_code", None)
        first = (str(exc).strip().splitlines() or [""])[0]
        if isinstance(exc, HfHubHTTPError) and code in (401, 403):
            raise line(f"the Hub refused the token (HTTP {code}); {LOGIN_HINT}") from None
        if isinstance(exc, _network_errors()) and not isinstance(exc, HfHubHTTPError):
            raise line(f"cannot reach the Hub ({type(exc).__name__}); check the network and retry") from None
        raise line(f"{type(exc).__name__}: {first}") from None
