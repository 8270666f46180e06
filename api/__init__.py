"""The request API: a Flask app speaking the ServiceX REST protocol, plus native endpoints.

- :mod:`.app`: the factory, ``create_app(services)``; nothing is constructed inside it.
- :mod:`.services`: the injected collaborators (store, broker, result store, policy).
- :mod:`.servicex` and :mod:`.native`: the routes; :mod:`.errors`: every error as JSON.
- :mod:`.submit` and :mod:`.datasets`: validation, dataset lookup and enqueueing.
- :mod:`.store`: the SQL request store (SQLite or PostgreSQL).

It imports the selection parser from :mod:`delivery` to refuse bad queries at
submit, and never the engine's reading or writing code.
"""

from api.app import create_app
from api.services import Services

__all__ = ["Services", "create_app"]
