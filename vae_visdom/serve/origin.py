"""The Host and Origin rule of `vae-visdom serve`, as plain functions of header values (no tornado, no visdom)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
# GETs that change state: websocket handshakes (the socket then carries commands), the polling socket's sign-up
STATE_CHANGING_GETS = ("/socket", "/vis_socket", "/socket_wrap", "/vis_socket_wrap")
DEFAULT_PORTS = {"http": 80, "https": 443}


def _name_and_port(netloc: str) -> tuple[str, int | None]:
    """('host name', port or None) of a Host header or an origin's host part; ValueError when malformed."""
    parts = urlsplit("//" + netloc)
    name = (parts.hostname or "").rstrip(".")  # lowercased, IPv6 brackets gone
    if not name or parts.username is not None or parts.path or parts.query or parts.fragment:
        raise ValueError(netloc)
    return name, parts.port  # .port raises ValueError for a non-number or one out of range


def own_names(bind_host: str) -> tuple[str, ...]:
    """The names this server answers to: loopback's, the --host given, and for a wildcard bind the machine's."""
    bind = bind_host.strip("[]").lower().rstrip(".")
    extra = {socket.gethostname().lower(), socket.getfqdn().lower()} if bind in WILDCARDS else {bind}
    return tuple(sorted(set(LOOPBACK_NAMES) | extra))


def host_refusal(host: str | None, bind_host: str, local_ip: Callable[[], str | None] | None = None,
                 names: tuple[str, ...] | None = None) -> str | None:
    """Why a request whose Host header is `host` is refused (DNS rebinding), or None to serve it.

    Allowed: own_names(bind_host), any loopback address, and the address the request came in on (local_ip(),
    asked only for an address not named already); any port."""
    if host is None:  # HTTP/1.0 without Host: not a browser (browsers always send it)
        return None
    names = names or own_names(bind_host)
    try:
        name, _ = _name_and_port(host)
    except ValueError:
        return f"malformed Host header {host!r}"
    if name in names:
        return None
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None and (ip.is_loopback or (local_ip is not None and str(ip) == local_ip())):
        return None
    return f"Host {host!r} is not a name of this server ({', '.join(names)}; any port)"


def same_origin(origin: str | None, host: str | None) -> bool:
    """True when `origin` (scheme://name[:port]) is the page address the request's own Host header names."""
    if not origin or not host or "://" not in origin:
        return False  # "null" (sandboxed frames, no-referrer requests, file://) is never the server's page
    scheme, _, rest = origin.partition("://")
    default = DEFAULT_PORTS.get(scheme.lower())
    try:
        o_name, o_port = _name_and_port(rest)
        h_name, h_port = _name_and_port(host)
    except ValueError:
        return False
    return default is not None and o_name == h_name and (o_port or default) == (h_port or default)


def changes_state(request) -> bool:
    return (request.method not in ("GET", "HEAD", "OPTIONS") or request.path in STATE_CHANGING_GETS
            or request.headers.get("Upgrade", "").lower() == "websocket")


def origin_refusal(headers) -> str | None:
    """Why a state-changing request with these headers is refused (it comes from another site), or None."""
    site = headers.get("Sec-Fetch-Site", "").lower()
    if site in ("cross-site", "same-site"):
        return f"a {site} request (Sec-Fetch-Site) may not change anything here"
    origin = headers.get("Origin")
    if origin is None or same_origin(origin, headers.get("Host")):
        return None  # no Origin: not from a browser page (browsers send it on every POST and websocket)
    return (f"Origin {origin!r} is not this server's own page (Host {headers.get('Host')!r}); "
            f"only the server's pages may change anything")
