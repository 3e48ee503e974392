"""The client side of ``hec serve``: send a ciphertext over HTTP, get the result ciphertext.

Plain ``urllib`` (no extra dependency). Before sending, the client asks the server what it
evaluates and refuses to send a ciphertext to a server holding another artifact or other keys:
it would be refused there anyway, after a needless upload.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from hec.errors import ServerError

__all__ = ["server_info", "remote_eval"]


def _open(request: urllib.request.Request | str, timeout: float, what: str):
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read().decode()).get("error", exc.reason)
        except (ValueError, AttributeError, UnicodeDecodeError):
            message = exc.reason
        raise ServerError(f"{what}: server answered {exc.code}: {message}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(f"{what}: cannot reach the server ({reason})") from None


def server_info(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """``GET /v1/info``: the artifact hash, key id, shapes and limits of the server at ``url``."""
    with _open(url.rstrip("/") + "/v1/info", timeout, url) as reply:
        try:
            info = json.loads(reply.read().decode())
        except (ValueError, UnicodeDecodeError):
            info = None
    if not isinstance(info, dict) or info.get("format") != "hec-server":
        raise ServerError(f"{url}: not a hec server")
    return info


def remote_eval(
    url: str, data: bytes, artifact_hash: str, key_id: str, timeout: float = 600.0
) -> bytes:
    """Send an input ciphertext file's bytes to ``url``; return the output file's bytes.

    Raises:
        ServerError: the server evaluates another artifact or keys, refused the request, or
            cannot be reached.
    """
    info = server_info(url)
    if info.get("artifact_hash") != artifact_hash:
        raise ServerError(
            f"{url}: serves artifact {str(info.get('artifact_hash'))[:16]}, this one is "
            f"{artifact_hash[:16]}"
        )
    if info.get("key_id") != key_id:
        raise ServerError(
            f"{url}: holds evaluation keys {str(info.get('key_id'))[:16]}, the ciphertext was "
            f"made with keys {key_id[:16]}"
        )
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/eval",
        data=data,
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    with _open(request, timeout, url) as reply:
        return reply.read()
