"""The Flask app factory: every collaborator comes in through :class:`Services`."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from api import (
    auth,
    dashboard,
    errors,
    health,
    metrics,
    native,
    openapi,
    requestlog,
    servicex,
    workers,
)
from api.services import Services

__all__ = ["create_app", "MAX_CONTENT_LENGTH"]

# A file list of 100k URLs fits; anything bigger is not a request we want to parse.
MAX_CONTENT_LENGTH = 16 * 1024 * 1024


class Int32Converter(IntegerConverter):
    """``<int:...>`` ids are 32-bit database keys: a larger one is a 404, not an overflow
    (a 500) in the database driver."""

    def __init__(self, url_map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(url_map, *args, **kwargs)


def create_app(services: Services, config: dict[str, Any] | None = None) -> Flask:
    auth.check_settings(services.settings)  # never serve with auth on and a weak secret
    app = Flask("delivery", static_folder=None)  # /static/ is the dashboard's (api/static)
    app.url_map.converters["int"] = Int32Converter  # before any rule is added
    app.config.update(MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH, JSON_SORT_KEYS=False)
    app.config.update(config or {})
    app.extensions["delivery"] = services
    requestlog.install(app)  # correlation ids and log context, before auth runs
    errors.install(app)
    auth.install(app)
    app.register_blueprint(servicex.blueprint)
    app.register_blueprint(native.blueprint)
    app.register_blueprint(openapi.blueprint)  # /openapi.json: the API's contract
    app.register_blueprint(health.blueprint)  # /healthz, /readyz: public probes
    app.register_blueprint(metrics.blueprint)  # /metrics (admin or service token with auth)
    app.register_blueprint(workers.blueprint)  # /internal/heartbeat
    dashboard.install(app)  # /, /requests/<id>, /workers, /login, /static, /dashboard/api
    return app
