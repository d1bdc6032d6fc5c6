"""The request guard of `vae-visdom serve`: the Host and Origin rule, and env ids checked before visdom sees them."""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
from typing import Callable
from urllib.parse import urlsplit

import tornado.escape
import tornado.web

from vae_visdom.config import ConfigError, check_name
from vae_visdom.serve import envs as server_envs

log = logging.getLogger("vae_visdom.serve.server")

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARDS = ("0.0.0.0", "::", "")
# GETs that change state: websocket handshakes (the socket then carries commands), the polling socket's sign-up
STATE_CHANGING_GETS = ("/socket", "/vis_socket", "/socket_wrap", "/vis_socket_wrap")
DEFAULT_PORTS = {"http": 80, "https": 443}


# ---- the Host and Origin rule ------------------------------------------------------------------------

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


class Guard:
    """The rule for one server: refusal(request) is the reason to answer 403, or None."""

    def __init__(self, bind_host: str):
        self.bind_host, self.names = bind_host, own_names(bind_host)

    def refusal(self, request) -> str | None:
        why = host_refusal(request.headers.get("Host"), self.bind_host, lambda: _local_ip(request), self.names)
        if why is None and changes_state(request):
            why = origin_refusal(request.headers)
        return why


def _local_ip(request) -> str | None:
    try:  # the address this request came in on (for a wildcard bind reached by the machine's IP)
        return request.connection.stream.socket.getsockname()[0].split("%")[0]
    except (AttributeError, OSError, IndexError):
        return None


class Refused(tornado.web.RequestHandler):
    """403 with the reason in one line of text (and in the server's log)."""

    def initialize(self, status: int, why: str) -> None:
        self.status, self.why = status, why

    def prepare(self) -> None:
        r = self.request
        log.warning("refused %s %s from %s: %s", r.method, r.path, r.remote_ip, self.why)
        self.set_status(self.status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{self.status} refused: {self.why}\n")

    def check_xsrf_cookie(self) -> None:
        pass


# ---- env ids ----------------------------------------------------------------------------------------

class EnvIdError(tornado.web.HTTPError):
    """400 for an env id outside config's name rule."""

    def __init__(self, err: ConfigError):
        self.text = str(err)
        super().__init__(400, self.text.replace("%", "%%"))  # tornado %-formats log_message


def checked_eid(raw) -> str:
    """An env id under config's rule (check_name), or EnvIdError (400). Replaces visdom's escape_eid."""
    try:
        return check_name(raw, "env id")
    except ConfigError as err:
        raise EnvIdError(err) from None


def install_env_checks() -> None:
    """Point visdom's server modules at checked_eid and the checked, atomic serialize_env (idempotent).

    escape_eid is where visdom's /events, /update, /close, /delete_env, /win_*, /save, /fork_env and the
    websocket's save take their env ids; serialize_env is where it writes env files."""
    from visdom.server import app
    from visdom.server.handlers import socket_handlers, web_handlers
    from visdom.utils import server_utils

    for module in (server_utils, web_handlers, socket_handlers):
        module.escape_eid = checked_eid
    for module in (server_utils, web_handlers, socket_handlers, app):
        module.serialize_env = server_envs.serialize_env


def _socket_eids(cmd, msg: dict) -> list:
    if cmd in ("forward_to_vis", "pop_embeddings_pane"):
        data = msg.get("data")
        return [data.get("eid") if isinstance(data, dict) else None]
    if cmd == "save":
        return [msg.get("eid"), msg.get("prev_eid")]
    if cmd in ("close", "delete_env", "layout_item_update"):
        return [msg.get("eid")]
    return []


def screen_socket_message(sock, message) -> str | None:
    """A page's websocket message, passed on (returned) only when its env ids are under the rule and exist.

    delete_env is done here, by remove_env; visdom's own version joins the raw id into a path."""
    try:
        msg = json.loads(tornado.escape.to_basestring(message))
    except ValueError:
        msg = None
    if not isinstance(msg, dict):
        log.warning("refused websocket message: not a JSON object")
        return None
    cmd = msg.get("cmd")
    eids = _socket_eids(cmd, msg)
    try:
        for eid in eids:
            check_name(eid, "env id")
    except ConfigError as err:
        log.warning("refused websocket message %s: %s", cmd, err)
        return None
    must_exist = eids[1:] if cmd == "save" else [] if cmd == "delete_env" else eids
    missing = [eid for eid in must_exist if eid not in sock.state]
    if missing:
        log.warning("refused websocket message %s: no env %r", cmd, missing[0])
        return None
    if cmd == "delete_env":
        from visdom.utils.server_utils import broadcast_envs

        sock.state.pop(msg["eid"], None)
        if sock.env_path is not None:
            server_envs.remove_env(sock.env_path, msg["eid"])
        broadcast_envs(sock)
        return None
    return message


# ---- visdom's handlers, guarded -----------------------------------------------------------------------

class _OneLineErrors:
    """Every error answered as one line of text (visdom's write_error writes an empty body); bad input is
    logged as one line too, not as a traceback."""

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, (json.JSONDecodeError, KeyError)):
            log.warning("%s %s: bad request: %s: %s", self.request.method, self.request.path, typ.__name__, value)
        else:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, EnvIdError):
            text = exc.text
        elif isinstance(exc, json.JSONDecodeError):
            self.set_status(400)
            text = f"the request body is not JSON ({exc})"
        elif isinstance(exc, KeyError):
            self.set_status(404)
            text = f"no such env or window: {exc}"
        elif isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            text = exc.log_message % exc.args
        else:
            text = f"{self._reason} (details in the server's log)"
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{self.get_status()}: {text}\n")


def _body(handler) -> dict:
    body = tornado.escape.json_decode(tornado.escape.to_basestring(handler.request.body))
    return body if isinstance(body, dict) else {}


def _guarded(cls: type) -> type:
    """A subclass of one of visdom's handler classes with the checks its route needs."""
    from visdom.server.handlers import socket_handlers as sh
    from visdom.server.handlers import web_handlers as wh
    from visdom.utils.server_utils import broadcast_envs, extract_eid

    extra: dict = {}
    if issubclass(cls, (wh.EnvHandler, wh.CompareHandler)):
        def prepare(self):  # /env/NAME, /compare/A+B: a GET of /env/ alone is the page with no env chosen
            names = self.path_args[0].split("+") if self.path_args else []
            for eid in names:
                if eid or self.request.method != "GET":
                    checked_eid(eid)

        extra["prepare"] = prepare
    if issubclass(cls, wh.EnvHandler):
        def post(self, args):  # visdom creates {"eid": ...} of the body as a new env, unchecked
            if "eid" in (body := _body(self)):
                checked_eid(body["eid"])
            cls.post(self, args)

        extra["post"] = post
    if issubclass(cls, wh.DeleteEnvHandler):
        def wrap_func(handler, args):
            eid = extract_eid(args)  # checked: escape_eid is checked_eid
            handler.state.pop(eid, None)
            if handler.env_path is not None:
                server_envs.remove_env(handler.env_path, eid)
            broadcast_envs(handler)

        extra["wrap_func"] = staticmethod(wrap_func)
    if issubclass(cls, (sh.SocketHandler, sh.VisSocketHandler)):
        extra["check_origin"] = lambda self, origin: same_origin(origin, self.request.headers.get("Host"))
    if issubclass(cls, sh.SocketHandler):
        def on_message(self, message):
            passed = screen_socket_message(self, message)
            if passed is not None:
                try:
                    cls.on_message(self, passed)
                except Exception as err:  # visdom's handler on a message it cannot take: one line, socket stays
                    log.warning("websocket message failed: %s: %s", type(err).__name__, err)

        extra["on_message"] = on_message
    if issubclass(cls, sh.SocketWrap):
        def post(self):  # the polling socket's "send" carries the same messages as the websocket
            args = _body(self)
            sub = self.subs.get(args.get("sid"))
            if args.get("message_type") == "send" and sub is not None and args.get("message") is not None:
                if screen_socket_message(sub, args["message"]) is None:
                    self.write(json.dumps({"success": True}))
                    return
            cls.post(self)

        extra["post"] = post
    return type(cls.__name__, (_OneLineErrors, cls), extra)


def guarded(handlers: list) -> list:
    """visdom's handler table with each handler class replaced by its guarded subclass."""
    return [(h[0], _guarded(h[1]), *h[2:]) if len(h) > 1 and isinstance(h[1], type) else h for h in handlers]
