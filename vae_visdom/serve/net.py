"""Where a server is and whether one answers: URLs, loopback checks, a free port, a GET /."""
from __future__ import annotations

import http.client
import ipaddress
import socket


def url_of(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def connect_host(host: str) -> str:
    """The address a client on this machine connects to for a server bound to `host`: a wildcard bind is
    reached through loopback."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def server_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a visdom page (the UI or its login page) answers GET / on host:port."""
    conn = http.client.HTTPConnection(connect_host(host), port, timeout=timeout)
    try:
        conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status == 200 and b"visdom" in resp.read(65536).lower()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def find_free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks; another process may still take it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def is_loopback(host: str) -> bool:
    """True when every address `host` names is a loopback address (127/8, ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)
