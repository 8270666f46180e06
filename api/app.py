"""The Flask app factory: every collaborator comes in through :class:`Services`."""

from __future__ import annotations

from typing import Any

from flask import Flask

from api import errors, native, servicex
from api.services import Services

__all__ = ["create_app", "MAX_CONTENT_LENGTH"]

# A file list of 100k URLs fits; anything bigger is not a request we want to parse.
MAX_CONTENT_LENGTH = 16 * 1024 * 1024


def create_app(services: Services, config: dict[str, Any] | None = None) -> Flask:
    app = Flask("delivery")
    app.config.update(MAX_CONTENT_LENGTH=MAX_CONTENT_LENGTH, JSON_SORT_KEYS=False)
    app.config.update(config or {})
    app.extensions["delivery"] = services
    errors.install(app)
    app.register_blueprint(servicex.blueprint)
    app.register_blueprint(native.blueprint)
    return app
