"""The operations dashboard: requests, one request, workers; server-rendered, polled live.

Pages (``/``, ``/requests/<id>``, ``/workers``) are Jinja templates that show
everything without JavaScript; ``static/dashboard.js`` then polls the JSON
twins under ``/dashboard/api/`` and redraws, and draws the throughput plot. No
external resources: it works offline.

Auth (``DELIVERY_AUTH=on``): browsers cannot send a Bearer header on
navigation, so ``/login`` takes a refresh token, makes an access JWT exactly as
``/token/refresh`` does and sets it as an HttpOnly, ``SameSite=Strict`` cookie
(``api.auth.ACCESS_COOKIE``), which the auth hook accepts. The refresh token
is kept in a second HttpOnly cookie scoped to ``/login`` only, so an expired
access token is renewed by a redirect through ``/login`` without typing it
again. CSRF: the cookies are never sent cross-site (Strict), the auth hook
demands the ``X-Delivery-CSRF`` header on cookie-authenticated POST/DELETE
(the page's JavaScript sends it; a cross-site form cannot), and ``POST
/login`` refuses a foreign ``Origin``. Isolation comes from ``owned()`` (404)
and the owner filter; the workers page hides other users' files.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from flask import Blueprint, g, jsonify, make_response, redirect, render_template, request
from werkzeug.wrappers import Response

from api import dashboard_data as data
from api.auth import ACCESS_COOKIE, CSRF_HEADER, current_user, issue_access, owner_filter
from api.errors import ApiError, Forbidden, Unauthorized
from api.requestlog import correlation_id
from api.servicex import FINAL, owned, services
from api.store.schema import STATUSES

__all__ = ["pages", "api", "install", "REFRESH_COOKIE"]

pages = Blueprint("dashboard", __name__, template_folder="templates",
                  static_folder="static", static_url_path="/static")
api = Blueprint("dashboard_api", __name__, url_prefix="/dashboard/api")
REFRESH_COOKIE = "delivery_refresh"
POLL_SECONDS = 1.5


def _visibility() -> Callable[[str | None], bool]:
    """Whether the caller may see a request's files (one lookup per request id)."""
    user = current_user()
    seen: dict[str, bool] = {}

    def visible(request_id: str | None) -> bool:
        if user is None or user.admin:
            return True
        if request_id is None:
            return False
        if request_id not in seen:
            row = services().store.get(request_id)
            seen[request_id] = row is not None and row.owner == user.name
        return seen[request_id]

    return visible


def _running(request_id: str) -> dict[int, str]:
    return {w["file_id"]: w["worker"] for w in services().ops.workers.workers(False)
            if w.get("request_id") == request_id and isinstance(w.get("file_id"), int)}


def _status_arg() -> str | None:
    wanted = request.args.get("status") or None
    if wanted is not None and wanted not in STATUSES:
        raise ApiError(f"status must be one of {', '.join(STATUSES)}")
    return wanted


def _base_url() -> str:
    return request.host_url.rstrip("/")


def _page(template: str, **values: Any) -> str:
    svc = services()
    return render_template(template, user=current_user(), auth=svc.settings.auth,
                           csrf_header=CSRF_HEADER, poll=POLL_SECONDS, final=FINAL, **values)


# -- pages ----------------------------------------------------------------------

@pages.get("/")
def requests_page() -> Any:
    status = _status_arg()
    return _page("requests.html", requests=data.request_list(services(), owner_filter(), status),
                 status=status, statuses=STATUSES)


@pages.get("/requests/<request_id>")
def request_page(request_id: str) -> Any:
    row = owned(request_id)
    detail = data.request_detail(services(), row, _base_url(), _running(request_id))
    return _page("request.html", r=detail)


@pages.get("/workers")
def workers_page() -> Any:
    return _page("workers.html", view=data.workers_view(services(), _visibility()))


def _safe_next(target: str | None) -> str:
    # only a path on this server: never an open redirect to another site
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_with(token: str, target: str) -> Response | None:
    svc = services()
    user = svc.store.user_for_refresh(token)
    if user is None:
        return None
    response = redirect(_safe_next(target), code=303)
    secure = request.is_secure
    response.set_cookie(ACCESS_COOKIE, issue_access(user, svc.settings),
                        max_age=svc.settings.access_ttl, httponly=True, samesite="Strict",
                        secure=secure, path="/")
    response.set_cookie(REFRESH_COOKIE, token, max_age=30 * 24 * 3600, httponly=True,
                        samesite="Strict", secure=secure, path="/login")
    return response


@pages.route("/login", methods=["GET", "POST"])
def login() -> Any:
    svc = services()
    target = _safe_next(request.values.get("next"))
    if not svc.settings.auth:
        return redirect(target, code=303)
    if request.args.get("logout"):
        response = make_response(_page("login.html", next=target, message="Logged out."))
        response.delete_cookie(ACCESS_COOKIE, path="/")
        response.delete_cookie(REFRESH_COOKIE, path="/login")
        return response
    message = None
    if request.method == "POST":
        origin = request.headers.get("Origin")
        if origin and origin.rstrip("/") != _base_url():
            raise Forbidden("login from another site refused")
        done = _login_with(request.form.get("token", "").strip(), target)
        if done is not None:
            return done
        message = g.error_message = "Unknown or revoked refresh token."
    elif request.cookies.get(REFRESH_COOKIE):  # renew a lapsed access token silently
        done = _login_with(request.cookies[REFRESH_COOKIE], target)
        if done is not None:
            return done
    code = 401 if message else 200
    return _page("login.html", next=target, message=message), code


@pages.errorhandler(ApiError)
def page_error(err: ApiError) -> Any:
    g.error_message = err.message  # for the API's log line of this response
    if isinstance(err, Unauthorized):
        return redirect(f"/login?next={quote(request.full_path.rstrip('?'))}", code=303)
    return _page("error.html", status=err.status, message=err.message,
                 correlation_id=correlation_id()), err.status


# -- JSON for the pages' live updates ----------------------------------------------

@api.get("/requests")
def requests_json() -> Any:
    return jsonify({"requests": data.request_list(services(), owner_filter(), _status_arg())})


@api.get("/requests/<request_id>")
def request_json(request_id: str) -> Any:
    row = owned(request_id)
    return jsonify(data.request_detail(services(), row, _base_url(), _running(request_id)))


@api.get("/workers")
def workers_json() -> Any:
    return jsonify(data.workers_view(services(), _visibility()))


def install(app: Any) -> None:
    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.jinja_env.filters.update(nbytes=nbytes, count=count, rate=rate, age=age)


# -- formatting (mirrored in dashboard.js) ------------------------------------------

def nbytes(n: float | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def count(n: float | None) -> str:
    return "" if n is None else f"{n:,.0f}"


def rate(n: float | None) -> str:
    if not n:
        return "–"
    return f"{n / 1e6:.2f} M/s" if n >= 1e6 else f"{n / 1e3:.1f} k/s" if n >= 1e3 \
        else f"{n:.0f} /s"


def age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"
