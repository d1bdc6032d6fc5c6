"""The request guard of `vae-visdom serve`: the Host and Origin rule, and env ids checked before visdom sees them."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import tornado.escape
import tornado.web
import tornado.websocket

from vae_visdom.config import ConfigError, check_name
from vae_visdom.serve import compat
from vae_visdom.serve import envs as server_envs
from vae_visdom.serve.origin import changes_state, host_refusal, origin_refusal, own_names, same_origin

__all__ = ["Guard", "NoFraming", "Refused", "guarded", "install_env_checks", "host_refusal", "same_origin"]

log = logging.getLogger("vae_visdom.serve.server")


# ---- the Host and Origin rule (origin.py), applied to every request -----------------------------------

class Guard:
    """The rule for one server: refusal(request) is the reason to answer 403, or None."""

    def __init__(self, bind_host: str):
        self.bind_host, self.names = bind_host, own_names(bind_host)

    def refusal(self, request) -> str | None:
        why = host_refusal(request.headers.get("Host"), self.bind_host, lambda: _local_ip(request), self.names)
        if why is None and changes_state(request):
            why = origin_refusal(request.headers)
        return why


class NoFraming(tornado.web.OutputTransform):
    """Every response says that only a page of this origin may frame it (the Application's transform: the one
    place every response passes, refusals, errors, static files and websocket handshakes included).

    Without it a page of any other site framed /env/runs or a run's env invisibly over a decoy button and a
    click started, forked or stopped a run (clickjacking). visdom's page never frames itself from elsewhere."""

    HEADERS = {"Content-Security-Policy": "frame-ancestors 'self'", "X-Frame-Options": "SAMEORIGIN"}

    def transform_first_chunk(self, status_code, headers, chunk, finishing):
        for name, value in self.HEADERS.items():
            headers[name] = value
        return status_code, headers, chunk


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

    # Any: these are visdom's modules, patched by name; names such as escape_eid are not declared in them
    modules: tuple[Any, ...] = (server_utils, web_handlers, socket_handlers, app)
    for module in modules[:3]:
        module.escape_eid = checked_eid
    for module in modules:
        module.serialize_env = server_envs.serialize_env
    if not isinstance(server_utils.gather_envs, CheckedGatherEnvs):
        checked = CheckedGatherEnvs(server_utils.gather_envs)
        for module in modules:
            if hasattr(module, "gather_envs"):
                module.gather_envs = checked
    if not compat.is_old_visdom() and not isinstance(web_handlers.update_window, VersionedUpdateWindow):
        web_handlers.update_window = VersionedUpdateWindow(web_handlers.update_window)


class CheckedGatherEnvs:
    """visdom's list of envs (the page's env menu, written into its script) without the files checked_state
    skipped at start or that came later: one file named outside the rule (a backslash) blanked every page."""

    def __init__(self, gather_envs):
        self.gather_envs = gather_envs

    def __call__(self, state, *args, **kwargs):
        env_path = kwargs.get("env_path", args[0] if args else None)
        names = self.gather_envs(state, *args, **kwargs)
        folder = env_path if isinstance(env_path, (str, os.PathLike)) else None  # visdom 0.3 passes its store
        return [e for e in names if _good_name(e)
                and (e in state or folder is None or server_envs.unusable_env(folder, e) is None)]


def _good_name(eid) -> bool:
    try:
        check_name(eid, "env id")
    except ConfigError:
        return False
    return True


class VersionedUpdateWindow:
    """visdom 0.3's update_window, mended: /update takes a window saved by a 0.2.4 server (no "version" key,
    which 0.3's update_window counts up). Its env files are written by its JSONStore, which keeps them inside
    the env path itself."""

    def __init__(self, update_window):
        self.update_window = update_window

    def __call__(self, p, args):
        p.setdefault("version", 1)
        return self.update_window(p, args)


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
    if cmd == "save_layouts":
        return _screened_layouts(msg)
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


def _screened_layouts(msg: dict) -> str | None:
    """save_layouts passes only with a layout (a JSON object, or its text): visdom writes `data` over
    view/layouts.json as it comes, and `data: 5` left the file empty."""
    data = msg.get("data")
    try:
        layouts = json.loads(data) if isinstance(data, str) else data
    except ValueError:
        layouts = None
    if not isinstance(layouts, dict):
        log.warning("refused websocket message save_layouts: its data is no layout (%s)", type(data).__name__)
        return None
    return json.dumps({**msg, "data": json.dumps(layouts)})


# ---- visdom's handlers, guarded -----------------------------------------------------------------------

class _StrictCookies(tornado.web.RequestHandler):
    """The login cookie rides only on requests this server's own pages make (SameSite=Strict): a page of another
    site can neither frame nor post with it."""

    def set_cookie(self, name, value, *args, **kwargs) -> None:
        kwargs["samesite"] = "Strict"
        super().set_cookie(name, value, *args, **kwargs)


class _OneLineErrors(tornado.web.RequestHandler):
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


def _check_path_eids(self) -> None:
    """prepare() of /env/NAME and /compare/A+B: a GET of /env/ alone is the page with no env chosen."""
    names = self.path_args[0].split("+") if self.path_args else []
    for eid in names:
        if eid or self.request.method != "GET":
            checked_eid(eid)


def _env_page_checks(cls: type[tornado.web.RequestHandler], wh) -> dict:
    """The env ids of the env and compare pages: in the path, and in the body of /env's POST."""
    extra: dict = {}
    if issubclass(cls, (wh.EnvHandler, wh.CompareHandler)):
        extra["prepare"] = _check_path_eids
    if issubclass(cls, wh.EnvHandler):
        def post(self, args):  # visdom creates {"eid": ...} of the body as a new env, unchecked
            if "eid" in (body := _body(self)):
                checked_eid(body["eid"])
            cls.post(self, args)

        extra["post"] = post
    return extra


def _delete_env(handler, args) -> None:
    """/delete_env: the checked id, its file removed only inside the env folder (server_envs.remove_env)."""
    from visdom.utils.server_utils import broadcast_envs, extract_eid

    eid = extract_eid(args)  # checked: escape_eid is checked_eid
    handler.state.pop(eid, None)
    if handler.env_path is not None:
        server_envs.remove_env(handler.env_path, eid)
    broadcast_envs(handler)


def _on_screened_message(cls: type[tornado.websocket.WebSocketHandler]):
    """on_message of the page's websocket: screened first; visdom's failure on it is one line, socket kept."""
    def on_message(self, message):
        passed = screen_socket_message(self, message)
        if passed is not None:
            try:
                cls.on_message(self, passed)
            except Exception as err:  # visdom's handler on a message it cannot take: one line, socket stays
                log.warning("websocket message failed: %s: %s", type(err).__name__, err)

    return on_message


def _screened_wrap_post(cls: type[tornado.web.RequestHandler]):
    """post of the polling socket: its "send" carries the same messages as the websocket, screened alike."""
    def post(self):
        args = _body(self)
        sub = self.subs.get(args.get("sid"))
        if args.get("message_type") == "send" and sub is not None and args.get("message") is not None:
            if screen_socket_message(sub, args["message"]) is None:
                self.write(json.dumps({"success": True}))
                return
        cls.post(self)

    return post


def _socket_checks(cls: type[tornado.web.RequestHandler], sh) -> dict:
    """Websockets and the polling socket: the Origin rule on the handshake, every page message screened."""
    extra: dict = {}
    if issubclass(cls, (sh.SocketHandler, sh.VisSocketHandler)):
        extra["check_origin"] = lambda self, origin: same_origin(origin, self.request.headers.get("Host"))
    if issubclass(cls, sh.SocketHandler):
        assert issubclass(cls, tornado.websocket.WebSocketHandler)  # visdom's SocketHandler is one
        extra["on_message"] = _on_screened_message(cls)
    if issubclass(cls, sh.SocketWrap):
        extra["post"] = _screened_wrap_post(cls)
    return extra


def _guarded(cls: type[tornado.web.RequestHandler]) -> type:
    """A subclass of one of visdom's handler classes with the checks its route needs."""
    from visdom.server.handlers import socket_handlers as sh
    from visdom.server.handlers import web_handlers as wh

    extra = {**_env_page_checks(cls, wh), **_socket_checks(cls, sh)}
    if issubclass(cls, wh.DeleteEnvHandler):
        extra["wrap_func"] = staticmethod(_delete_env)
    if issubclass(cls, wh.ErrorHandler):  # visdom routes it with {"app": ...} but gave it no initialize: the
        extra["initialize"] = lambda self, app: None  # connection dropped with a traceback instead of a 500
    return type(cls.__name__, (_StrictCookies, _OneLineErrors, cls), extra)


def guarded(handlers: list) -> list:
    """visdom's handler table with each handler class replaced by its guarded subclass."""
    return [(h[0], _guarded(h[1]), *h[2:]) if len(h) > 1 and isinstance(h[1], type) else h for h in handlers]
