"""``delivery up --workers N``: the whole service on one machine, without Docker.

1. Preflight (:mod:`delivery.preflight`): each configured service (RabbitMQ, S3,
   the database) must answer within a few seconds, and the API's port must be
   free; each problem is one line (passwords masked) and nothing starts.
2. No broker configured: this is ``delivery serve --workers N``, the embedded
   default (the in-process queue and N worker processes of the serving
   process).
3. A broker configured: the API (``delivery serve``) and N ``delivery worker``
   processes, supervised by :class:`~delivery.supervisor.Supervisor` (restarts
   with backoff, graceful Ctrl-C, output relayed with secrets masked). The
   workers report to this API with the service token; one is generated for the
   children if none is configured.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from urllib.parse import urlsplit

from delivery.config import Settings
from delivery.preflight import check, mask_url
from delivery.supervisor import Child, Supervisor

__all__ = ["up"]


def _client_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _free_port(host: str, port: int) -> int:
    """``port`` if it can be bound on ``host`` (0: any free one); raises OSError if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise OSError(f"cannot listen on {host}:{port}: {err.strerror}") from None
        return int(sock.getsockname()[1])


def up(settings: Settings, host: str, port: int, workers: int, grace: float = 300.0) -> int:
    """Check the configured services, then run the service until Ctrl-C or SIGTERM."""
    problems = check(settings)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    port = _free_port(host, port)
    if settings.embedded_broker:
        from api.serve import serve  # stops cleanly on Ctrl-C and on SIGTERM

        serve(settings, host, port, workers)
        return 0
    token = settings.service_token or secrets.token_urlsafe(32)
    api_url = f"http://{_client_host(host)}:{port}"
    env = {**os.environ, "DELIVERY_STATE_DIR": str(settings.state_dir),
           "DELIVERY_DATABASE_URL": settings.database_url,
           "DELIVERY_ALLOWED_ROOTS": os.pathsep.join(settings.allowed_roots),
           "DELIVERY_SERVICE_TOKEN": token, "DELIVERY_API_URL": api_url}
    if sys.stdout.isatty():  # the children write to our pipe; a person reads their lines
        env.setdefault("DELIVERY_LOG_FORMAT", "text")
    command = [sys.executable, "-m", "delivery"]
    api = Child("api", [*command, "serve", "--host", host, "--port", str(port), "--workers", "0"])
    pool = [Child(f"worker-{i + 1}", [*command, "worker"]) for i in range(workers)]
    hidden = [token, settings.s3_secret_key or "", settings.s3_read_secret_key or "",
              settings.auth_secret or ""]
    hidden += [urlsplit(url).password or "" for url in (settings.broker_url or "",
                                                         settings.database_url)]
    supervisor = Supervisor(api, pool, env, api_url, secrets_=hidden, grace=grace)
    supervisor.say(f"broker {mask_url(settings.broker_url or '')}, database "
                   f"{mask_url(settings.database_url)}, results "
                   f"{settings.s3_endpoint or settings.results_dir}; "
                   + ("service token from DELIVERY_SERVICE_TOKEN" if settings.service_token
                      else "generated a service token for the workers"))
    return supervisor.run()
