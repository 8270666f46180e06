"""Which inputs this deployment may open: schemes, hosts and local roots.

The API checks every input at submit and the worker checks it again before
opening it, so a message that skipped the API still cannot reach outside the
allowed roots. A local path is resolved (symlinks and ``..`` included) before
the containment check.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from delivery.errors import PolicyError

__all__ = ["SourcePolicy", "DEFAULT_SCHEMES", "is_local"]

DEFAULT_SCHEMES = frozenset({"file", "root", "http", "https", "s3"})


def is_local(url: str) -> bool:
    """True for a plain path or a ``file://`` URL."""
    scheme = urlsplit(url).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _blocked_host(host: str) -> bool:
    # Link-local (cloud metadata at 169.254.169.254, fe80::/10) is never a data source.
    try:
        return ipaddress.ip_address(host.strip("[]")).is_link_local
    except ValueError:
        return host.lower() in ("metadata.google.internal", "metadata")


@dataclass(frozen=True)
class SourcePolicy:
    """``allowed_roots`` confine local paths; ``hosts`` (if set) confine remote hosts."""

    allowed_roots: tuple[Path, ...]
    schemes: frozenset[str] = DEFAULT_SCHEMES
    hosts: frozenset[str] | None = None

    @classmethod
    def create(cls, roots: Iterable[str | os.PathLike[str]], *,
               schemes: Iterable[str] | None = None,
               hosts: Iterable[str] | None = None) -> SourcePolicy:
        return cls(
            allowed_roots=tuple(Path(os.path.realpath(r)) for r in roots),
            schemes=frozenset(schemes) if schemes is not None else DEFAULT_SCHEMES,
            hosts=frozenset(h.lower() for h in hosts) if hosts is not None else None,
        )

    @classmethod
    def from_env(cls, default_roots: Iterable[str | os.PathLike[str]] = ()) -> SourcePolicy:
        """``DELIVERY_ALLOWED_ROOTS`` (os.pathsep-separated), ``DELIVERY_ALLOWED_SCHEMES``
        and ``DELIVERY_ALLOWED_HOSTS`` (comma-separated)."""
        roots_env = os.environ.get("DELIVERY_ALLOWED_ROOTS")
        roots = [r for r in roots_env.split(os.pathsep) if r] if roots_env else list(default_roots)
        schemes = os.environ.get("DELIVERY_ALLOWED_SCHEMES")
        hosts = os.environ.get("DELIVERY_ALLOWED_HOSTS")
        return cls.create(
            roots,
            schemes=[s.strip() for s in schemes.split(",") if s.strip()] if schemes else None,
            hosts=[h.strip() for h in hosts.split(",") if h.strip()] if hosts else None,
        )

    def check(self, url: str) -> str:
        """Return the input to open (a resolved path for local files) or raise PolicyError."""
        if not isinstance(url, str) or not url or "\x00" in url or len(url) > 4096:
            raise PolicyError(f"input {str(url)[:80]!r} is not a usable path or URL")
        parts = urlsplit(url)
        rest = url.replace(parts.netloc, "", 1) if parts.netloc else url
        if "::" in rest:
            raise PolicyError(f"input {url!r}: chained URLs ('::') are not allowed")
        if is_local(url):
            return self._check_local(parts.path if parts.scheme == "file" else url)
        scheme = parts.scheme.lower()
        if scheme not in self.schemes or scheme == "file":
            raise PolicyError(f"input {url!r}: scheme {scheme!r} is not allowed; allowed: "
                              + ", ".join(sorted(self.schemes)))
        host = (parts.hostname or "").lower()
        if not host:
            raise PolicyError(f"input {url!r} names no host")
        if _blocked_host(host):
            raise PolicyError(f"input {url!r}: host {host} is link-local and not allowed")
        if self.hosts is not None and host not in self.hosts:
            raise PolicyError(f"input {url!r}: host {host} is not in the allowed hosts")
        return url

    def _check_local(self, path: str) -> str:
        if "file" not in self.schemes:
            raise PolicyError("local files are not allowed on this service")
        real = Path(os.path.realpath(os.path.expanduser(path)))
        for root in self.allowed_roots:
            if real == root or root in real.parents:
                return str(real)
        if not self.allowed_roots:
            raise PolicyError(f"local path {path!r} refused: no allowed roots are configured "
                              "(set DELIVERY_ALLOWED_ROOTS)")
        raise PolicyError(f"local path {path!r} is outside the allowed roots: "
                          + ", ".join(str(r) for r in self.allowed_roots))
