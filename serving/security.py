"""What the service refuses before any view runs, and what its errors never say.

- A request whose ``Host`` is not one the service is known by is refused (403): names in
  ``PNEUMO_ALLOWED_HOSTS``, and this machine's loopback names. A DNS-rebinding page (its own
  name pointed at the service's address) sends its own name as ``Host`` and as ``Origin``, which
  the origin rule below alone would take for the service's own page.
- A browser POST from another origin is refused (403) unless the origin is listed in
  ``PNEUMO_ALLOWED_ORIGINS``: without it, any web page could make a visitor's browser send images
  to ``/predict`` and poison the records that drive retraining. Clients that are not browsers send
  no ``Origin`` and are not affected.
- Error messages and ``/ready`` never name internal endpoints: URLs, addresses and host/port pairs
  are replaced by ``<internal>`` (the full message is in the service's log).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import abort, current_app, request

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_INTERNAL = [
    re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\",)]+", re.IGNORECASE),  # URLs of any scheme
    re.compile(r"host='[^']*'(, port=\d+)?"),  # urllib3's HTTPConnectionPool(host='...', port=...)
    re.compile(r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b"),  # IPv4 addresses, with a port
    re.compile(r"\blocalhost(:\d+)?\b", re.IGNORECASE),
]


def redact(text: str | None) -> str | None:
    """``text`` with every internal endpoint replaced by ``<internal>``."""
    if text is None:
        return None
    for pattern in _INTERNAL:
        text = pattern.sub("<internal>", text)
    return text


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def allowed_hosts(value: str | None) -> frozenset[str]:
    """``PNEUMO_ALLOWED_HOSTS`` (comma-separated names, ports ignored) and the loopback names."""
    names = {_hostname(name) for name in (value or "").split(",") if name.strip()}
    return frozenset(names | LOOPBACK_HOSTS)


def _hostname(host: str) -> str:
    """``Host`` without its port, lower case (``[::1]:8085`` -> ``::1``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def refuse_unknown_host() -> None:
    """``before_request``: 403 for a ``Host`` the service is not known by (DNS rebinding)."""
    host = _hostname(request.host)
    if host not in current_app.config["ALLOWED_HOSTS"]:
        abort(403, f"this service is not served as {host!r}: list the name in PNEUMO_ALLOWED_HOSTS")


def allowed_origins(value: str | None) -> set[str]:
    """``PNEUMO_ALLOWED_ORIGINS`` (comma-separated ``scheme://host[:port]``) as a set."""
    return {origin.strip().rstrip("/") for origin in (value or "").split(",") if origin.strip()}


def refuse_cross_origin() -> None:
    """``before_request``: 403 for a state-changing request a browser sends from another origin."""
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser, or a browser that says where it is (same-origin GET forms)
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            abort(403, "cross-site requests are refused: list the site in PNEUMO_ALLOWED_ORIGINS")
        return
    origin = origin.rstrip("/")
    if origin in current_app.config["ALLOWED_ORIGINS"]:
        return
    if origin != "null" and urlsplit(origin).netloc == request.host:  # the service's own page
        return
    abort(
        403, f"requests from the origin {origin} are refused: list it in PNEUMO_ALLOWED_ORIGINS to allow it"
    )
