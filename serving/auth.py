"""Bearer-token checks."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import abort, current_app, request


def _presented_token() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_token(config_key: str, always: bool = False, fallback: str | None = None) -> Callable:
    """Guard a view with the bearer token in ``app.config[config_key]`` (else in ``fallback``'s).

    Without a configured token the view is open, unless ``always``: then it is closed (403). The
    service starts without an API token only on loopback or when told to
    (:func:`pneumo.config.exposure_refusal`).
    """

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            expected = current_app.config.get(config_key) or None  # an empty token is no token
            if expected is None and fallback is not None:
                expected = current_app.config.get(fallback) or None
            if expected is None:
                if always:
                    abort(403, f"disabled: set PNEUMO_{config_key} to enable this endpoint")
                return view(*args, **kwargs)
            if not hmac.compare_digest(_presented_token().encode(), expected.encode()):
                abort(401, "missing or wrong bearer token (Authorization: Bearer ...)")
            return view(*args, **kwargs)

        return wrapped

    return decorator
