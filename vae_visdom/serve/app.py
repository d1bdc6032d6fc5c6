"""The tornado application `vae-visdom serve` runs: visdom's, behind the guard, with login and an info endpoint."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import secrets
from pathlib import Path

from vae_visdom.config import DEFAULT_HOST, DEFAULT_PORT
from vae_visdom.serve import compat
from vae_visdom.serve.envs import checked_loader, checked_state
from vae_visdom.serve.net import connect_host, url_of


def login_credential(user: str, password: str) -> dict:
    """visdom's user_credential dict for `user`/`password`; makes sure the cookie secret file visdom reads
    exists (VISDOM_COOKIE, else a random one kept beside visdom's default env path)."""
    from visdom.server.defaults import DEFAULT_ENV_PATH  # visdom reads COOKIE_SECRET from here only
    from visdom.utils.server_utils import hash_password

    secret_file = Path(DEFAULT_ENV_PATH) / "COOKIE_SECRET"
    secret = os.environ.get("VISDOM_COOKIE")
    if secret or not secret_file.is_file():
        secret_file.parent.mkdir(parents=True, exist_ok=True)
        secret_file.write_text(secret or secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    # the browser sends sha256hex(password); visdom checks its hash_password of that: plain sha256 in 0.2.4,
    # salted PBKDF2 in 0.3 (which hashes the sent value again with the stored salt)
    return {"username": user, "password": hash_password(hashlib.sha256(password.encode("utf-8")).hexdigest())}


def _compare_handler():
    """visdom 0.2.4's /compare/A+B handler, mended in two places.

    Its GET lists envs in ~/.visdom instead of the server's env path (HTTP 500 where that folder
    does not exist), and its POST merges windows correctly only when the env names come sorted.
    """
    from visdom.server.handlers.web_handlers import CompareHandler, check_auth
    from visdom.utils.server_utils import compare_envs, gather_envs

    class EnvPathCompareHandler(CompareHandler):
        @check_auth
        def get(self, eids):
            import getpass

            items = gather_envs(self.state, env_path=self.env_path)
            wanted = sorted(e for e in eids.split("+") if e in items)
            self.render("index.html", user=getpass.getuser(), items=items, active_item="+".join(wanted),
                        wrap_socket=self.wrap_socket)

        @check_auth
        def post(self, args):
            import tornado.escape

            sid = tornado.escape.json_decode(tornado.escape.to_basestring(self.request.body))["sid"]
            if sid in self.subs:
                compare_envs(self.state, sorted(args.split("+")), self.subs[sid], self.env_path)

    return CompareHandler, EnvPathCompareHandler


INFO_PATH = "/vae_visdom/server"  # GET: {"server", "pid", "env_path", "url"} of this server, as JSON


def make_application(env_path: str | os.PathLike, port: int = DEFAULT_PORT, credential: dict | None = None,
                     host: str = DEFAULT_HOST, url: str | None = None):
    """visdom's Application for env_path, with tornado's debug mode (autoreload, no caches) off,
    the compare view mended (see _compare_handler), and every request through server_guard's rule
    (Host, Origin, env ids)."""
    import tornado.web
    from visdom.server.app import Application
    from visdom.server.handlers.base_handlers import BaseHandler

    from vae_visdom.serve import guard as server_guard  # late: tornado and visdom only when a server is built

    server_guard.install_env_checks()  # before Application(): it may write main.json
    # visdom 0.3 fixed both compare bugs itself (and changed gather_envs/compare_envs): keep its handler there
    broken, mended = _compare_handler() if compat.is_old_visdom() else (None, None)
    guard = server_guard.Guard(host)
    info = {"server": "vae-visdom", "pid": os.getpid(), "env_path": str(env_path), "url": url or url_of(host, port)}

    class InfoHandler(BaseHandler):  # lets `serve --detach` see which env folder a running server keeps
        def get(self):
            if self.settings.get("cookie_secret") and not self.current_user:
                # answered here, not raised: visdom's write_error logs a traceback for every HTTPError;
                # tornado's access log gives the one line
                self.set_status(403)
                self.set_header("Content-Type", "text/plain; charset=utf-8")
                self.finish("403: log in first\n")
                return
            self.write(info)

    class _NoDebug(tornado.web.Application):
        # visdom's Application.__init__ forces settings["debug"] = True and then calls
        # super().__init__ with its handler table; placed between it and tornado's class in the
        # MRO, this turns debug off, swaps in the mended compare handler and guards every handler
        def __init__(self, handlers=None, **settings):
            settings["debug"] = False
            handlers = [(h[0], mended, *h[2:]) if len(h) > 1 and h[1] is broken else h for h in handlers or []]
            super().__init__([(INFO_PATH, InfoHandler)] + server_guard.guarded(handlers), **settings)
            self.add_transform(server_guard.NoFraming)

        def find_handler(self, request, **kwargs):
            why = guard.refusal(request)  # before routing: static files and unknown paths too
            if why is not None:
                return self.get_handler_delegate(request, server_guard.Refused, {"status": 403, "why": why})
            return super().find_handler(request, **kwargs)

    class QuietApplication(Application, _NoDebug):
        def load_state(self):  # visdom's, less env files another tool left that cannot be served
            storage = getattr(self, "storage", None)  # visdom 0.3 also reads env files on demand through it
            if storage is not None and hasattr(storage, "load_env"):
                storage.load_env = checked_loader(storage.load_env, self.env_path)
            return checked_state(super().load_state(), self.env_path)

    return QuietApplication(port=port, base_url="", env_path=str(env_path), user_credential=credential)


def running_env_path(host: str, port: int, timeout: float = 2.0) -> str | None:
    """The env folder of the vae-visdom server answering on host:port; None when it does not say
    (a plain visdom server, or login hides it)."""
    conn = http.client.HTTPConnection(connect_host(host), port, timeout=timeout)
    try:
        conn.request("GET", INFO_PATH)
        resp = conn.getresponse()
        info = json.loads(resp.read(65536)) if resp.status == 200 else {}
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    return info.get("env_path") if isinstance(info, dict) and info.get("server") == "vae-visdom" else None
