"""Authentication: refresh tokens, short-lived access JWTs, and who the caller is.

With ``DELIVERY_AUTH=on``:

- a user holds a refresh token (``delivery tokens issue``) and exchanges it at
  ``POST /token/refresh`` (``Authorization: Bearer <refresh token>``) for
  ``{"access_token": <JWT>}``, HS256-signed with ``DELIVERY_AUTH_SECRET`` and
  valid ``DELIVERY_ACCESS_TTL`` seconds: the flow the servicex client speaks;
- every other route needs ``Authorization: Bearer <access JWT>`` (401 without),
  except the public ones (:data:`PUBLIC`) and those that check a credential of
  their own (``/internal/*``: the workers' service token; ``/metrics``);
- the dashboard may carry the access JWT in the :data:`ACCESS_COOKIE` cookie
  instead; a state-changing call authenticated by that cookie must also send
  the :data:`CSRF_HEADER` header, which a cross-site form cannot add.

Revoking a refresh token stops new access tokens at once; an access token
already issued lives out its TTL (900 s by default).

With auth off (the embedded default), :func:`current_user` is ``None``: one
local user who sees everything.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

import jwt
from flask import Blueprint, Flask, current_app, g, jsonify, request

from api.errors import Forbidden, NotFound, Unauthorized
from api.store.users import User
from delivery.config import Settings

__all__ = ["blueprint", "install", "current_user", "owner_filter", "can_see", "User",
           "issue_access", "check_settings", "require_admin_or_service", "ACCESS_COOKIE",
           "CSRF_HEADER", "PUBLIC"]

blueprint = Blueprint("auth", __name__)
ACCESS_COOKIE = "delivery_access"
CSRF_HEADER = "X-Delivery-CSRF"
PUBLIC = ("/token/refresh", "/healthz", "/readyz", "/static/", "/login", "/openapi.json")
SELF_CHECKED = ("/internal/", "/metrics")
_ALGORITHM = "HS256"
_WEAK = {"changeme", "change_me", "secret", "password", "default", "delivery", "servicex"}


def check_settings(settings: Settings) -> None:
    """Refuse to start with auth on and a missing or guessable secret."""
    if not settings.auth:
        return
    secret = settings.auth_secret or ""
    if len(secret) < 32 or secret.lower() in _WEAK or len(set(secret)) < 8:
        raise ValueError("DELIVERY_AUTH=on needs DELIVERY_AUTH_SECRET: 32 or more random "
                         "characters (e.g. `python3 -c 'import secrets; "
                         "print(secrets.token_urlsafe(48))'`)")
    token = settings.service_token
    if token is not None and (len(token) < 16 or token.lower() in _WEAK):
        raise ValueError("DELIVERY_SERVICE_TOKEN must be 16 or more random characters")


def _settings() -> Settings:
    found: Settings = current_app.extensions["delivery"].settings
    return found


def issue_access(user: User, settings: Settings) -> str:
    now = int(time.time())
    claims = {"sub": user.name, "admin": user.admin, "iat": now,
              "exp": now + settings.access_ttl, "typ": "access"}
    return jwt.encode(claims, settings.auth_secret or "", algorithm=_ALGORITHM)


def _verify(token: str, settings: Settings) -> User:
    try:
        claims = jwt.decode(token, settings.auth_secret or "", algorithms=[_ALGORITHM],
                            options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("access token expired: refresh it at /token/refresh") from None
    except jwt.InvalidTokenError:
        raise Unauthorized("invalid access token") from None
    if claims.get("typ") != "access" or not isinstance(claims["sub"], str):
        raise Unauthorized("invalid access token")
    return User(claims["sub"], bool(claims.get("admin", False)))


def _bearer() -> str | None:
    given = request.headers.get("Authorization", "")
    return given[7:].strip() if given.startswith("Bearer ") else None


def current_user() -> User | None:
    """The caller (set by the hook before every request); None when auth is off."""
    user: User | None = g.get("user")
    return user


def owner_filter() -> str | None:
    """The owner to restrict request lists to; None means every request."""
    user = current_user()
    return None if user is None or user.admin else user.name


def can_see(owner: str | None) -> bool:
    user = current_user()
    return user is None or user.admin or owner == user.name


def require_admin_or_service() -> None:
    """For operator routes (read-only GETs): an admin's access JWT, as a bearer token or
    the dashboard's cookie, or the workers' service token."""
    settings = _settings()
    if not settings.auth:
        return
    token = _bearer()
    service = settings.service_token
    if token and service and hmac.compare_digest(token.encode(), service.encode()):
        return
    token = token or request.cookies.get(ACCESS_COOKIE)
    user = _verify(token, settings) if token else None
    if user is None:
        raise Unauthorized("this route needs an admin's access token")
    if not user.admin:
        raise Forbidden("this route is for admins")


def _authenticate() -> None:
    g.user = None
    settings = _settings()
    if not settings.auth or request.endpoint is None:  # None: a 404 is coming anyway
        return
    path = request.path
    if path.startswith(PUBLIC) or path.startswith(SELF_CHECKED):
        return
    token = _bearer()
    if token is None:
        token = request.cookies.get(ACCESS_COOKIE)
        if token and request.method not in ("GET", "HEAD", "OPTIONS") \
                and request.headers.get(CSRF_HEADER) != "1":
            raise Forbidden(f"a call authenticated by cookie must send {CSRF_HEADER}: 1")
    if not token:
        raise Unauthorized("authentication required: send Authorization: Bearer "
                           "<access token> (get one at POST /token/refresh)")
    g.user = _verify(token, settings)


@blueprint.post("/token/refresh")
def refresh() -> Any:
    settings = _settings()
    if not settings.auth:
        raise NotFound("authentication is off on this server: no tokens to refresh")
    token = _bearer()
    if not token:
        raise Unauthorized("send the refresh token as Authorization: Bearer <token>")
    user = current_app.extensions["delivery"].store.user_for_refresh(token)
    if user is None:
        raise Unauthorized("unknown or revoked refresh token")
    return jsonify({"access_token": issue_access(user, settings), "token_type": "Bearer",
                    "expires_in": settings.access_ttl})


def install(app: Flask) -> None:
    app.before_request(_authenticate)
    app.register_blueprint(blueprint)

