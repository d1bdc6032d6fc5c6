"""visdom's browser UI files, installed from the npm registry instead of public CDNs.

visdom 0.2.4's `python -m visdom.server` first runs `download_scripts()`, which fetches ~30
JS/CSS/font files from unpkg, cdn.plot.ly, d3js.org and cdnjs. Offline it dies; behind a
dropping firewall it hangs (visdom issues #184, #705, #738). It skips the download only when
every file exists and `static/version.built` holds exactly `visdom.__version__`.

Every one of those files ships in an npm package. We `npm pack NAME@VERSION` each package
we still need, check the tarball's sha512 against the value pinned in the manifest (the
registry's `dist.integrity`), and only then copy the listed members into visdom/static/.
There is one manifest per supported visdom version (assets-VERSION.json: visdom 0.3.0 wants newer
react-resizable and react-grid-layout CSS and MathJax 3), chosen by the installed version.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from vae_visdom.safe_io import atomic_write
from vae_visdom.serve import compat

NPM_TIMEOUT_S = 600  # mathjax is a 21 MB tarball; a slow mirror can take minutes


class AssetError(RuntimeError):
    """The UI files could not be installed (no npm, npm failed, or a tarball failed its check)."""


def _visdom_dir() -> Path:
    # found, not imported: importing visdom pulls numpy/requests, and this runs from setup.sh
    folder = compat.visdom_dir()
    if folder is None:
        raise AssetError(f"visdom is not installed in this Python; vae-visdom supports {compat.supported_text()}")
    return folder


def visdom_version() -> str:
    """The string visdom compares `static/version.built` with (its `__version__`)."""
    _visdom_dir()
    version = compat.installed_version()
    assert version is not None  # _visdom_dir() found visdom's folder, and then a version always reads
    return version


def default_static_dir() -> Path:
    """The folder the visdom server serves its UI from: site-packages/visdom/static."""
    return _visdom_dir() / "static"


def load_manifest(version: str | None = None) -> dict:
    """The installed visdom's (or `version`'s) manifest, assets-VERSION.json:
    {"visdom": VERSION, "packages": {"name@version": {"integrity": "sha512-...", "files": {member: [targets]}}}}.

    AssetError, naming the supported versions, for a visdom version without one."""
    try:
        return json.loads(compat.manifest_path(version).read_text())
    except compat.UnsupportedVisdom as err:
        raise AssetError(str(err)) from None


def _targets(manifest: dict) -> dict[str, tuple[str, str]]:
    """target path under static/ -> (package spec, tarball member)."""
    out = {}
    for spec, pkg in manifest["packages"].items():
        for member, targets in pkg["files"].items():
            for target in targets:
                out[target] = (spec, member)
    return out


def missing(static_dir: str | os.PathLike | None = None, *, manifest: dict | None = None) -> list[str]:
    """Paths under static/ that are absent or empty, plus "version.built" when it is absent or stale.

    An empty list means visdom's server will not try to download anything.
    """
    static = Path(static_dir) if static_dir is not None else default_static_dir()
    out = []
    for target in _targets(manifest if manifest is not None else load_manifest()):
        path = static / target
        # a failed CDN download can leave a 0-byte file behind; treat it as absent
        if not path.is_file() or path.stat().st_size == 0:
            out.append(target)
    built = static / "version.built"
    if not built.is_file() or built.read_text().strip() != visdom_version():
        out.append("version.built")
    return sorted(out)


def sri_sha512(data: bytes) -> str:
    """Subresource-integrity string, the format of npm's `dist.integrity`."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _npm_pack(specs: list[str], workdir: Path) -> dict[str, Path]:
    """Download the tarballs of `specs` into workdir; return spec -> tarball path."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            "npm not found: visdom's UI files are taken from the npm registry. Install Node.js/npm "
            "(Debian: apt-get install npm) and run `vae-visdom assets install` again."
        )
    # cwd=workdir instead of --pack-destination (needs npm >= 7.18). --prefer-offline: exact versions
    # checked by sha512 below, so a cached tarball is as good as a fresh one. Short retries: with npm's
    # defaults an unreachable registry or proxy takes ~3.5 minutes to report.
    cmd = [npm, "pack", "--json", "--ignore-scripts", "--prefer-offline", "--fetch-retries=1",
           "--fetch-retry-mintimeout=1000", "--fetch-retry-maxtimeout=5000", *specs]
    try:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise AssetError(f"`npm pack` did not finish in {NPM_TIMEOUT_S} s (registry unreachable?)") from e
    if proc.returncode != 0:
        tail = "\n".join([ln for ln in proc.stderr.splitlines() if not ln.startswith("npm warn")][-8:])
        raise AssetError(f"`npm pack {' '.join(specs)}` failed (exit {proc.returncode}):\n{tail}")
    packed = json.loads(proc.stdout)  # one entry per spec, in order
    return {spec: workdir / entry["filename"] for spec, entry in zip(specs, packed)}


def _write_atomic(path: Path, data: bytes) -> None:
    # a reader (the running server, a second install) never sees a half-written file
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data, shared=True)


def install(static_dir: str | os.PathLike | None = None, force: bool = False, *, quiet: bool = False,
            manifest: dict | None = None) -> None:
    """Install the missing UI files (all of them with force=True) from verified npm tarballs.

    Does nothing when `missing()` is empty and force is False. Raises AssetError when npm is
    absent, fails, or a tarball's sha512 differs from the manifest; in that case no file of
    that batch is written. `manifest` (default: the installed visdom's) exists for tests.
    """
    static = Path(static_dir) if static_dir is not None else default_static_dir()
    manifest = manifest if manifest is not None else load_manifest()
    targets = _targets(manifest)
    if not force and not missing(static, manifest=manifest):
        return
    todo = sorted(targets) if force else [t for t in missing(static, manifest=manifest) if t in targets]
    specs = sorted({targets[t][0] for t in todo})
    if specs and not quiet:
        print(f"[assets] fetching {len(specs)} npm package(s) for {len(todo)} visdom UI file(s)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="vae_visdom_assets_") as tmp:
        tarballs = _npm_pack(specs, Path(tmp)) if specs else {}
        # verify every tarball before writing anything, so a bad one leaves static/ untouched
        for spec, path in tarballs.items():
            want = manifest["packages"][spec]["integrity"]
            got = sri_sha512(path.read_bytes())
            if got != want:
                raise AssetError(f"integrity mismatch for {spec}: expected {want}, got {got}; nothing installed")
        for spec, path in tarballs.items():
            with tarfile.open(path, "r:gz") as tar:
                # read named members only (no extractall): a tarball cannot write outside static/
                for target in (t for t in todo if targets[t][0] == spec):
                    member = tar.getmember(targets[target][1])
                    if not member.isfile():
                        raise AssetError(f"{spec}: {member.name} is not a regular file")
                    content = tar.extractfile(member)
                    assert content is not None  # a regular file (checked above) always extracts
                    _write_atomic(static / target, content.read())
    # version.built last: it is visdom's "everything is here" flag
    left = [t for t in missing(static, manifest=manifest) if t != "version.built"]
    if left:
        raise AssetError(f"still missing after install: {', '.join(left)}")
    _write_atomic(static / "version.built", visdom_version().encode())
    if not quiet:
        print(f"[assets] visdom UI files ready in {static}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    try:
        load_manifest()
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.action == "check":
        gone = missing(args.static_dir)
        if gone:
            print(f"missing {len(gone)} visdom UI file(s) (run `vae-visdom assets install`):")
            for path in gone:
                print(f"  {path}")
            return 1
        print(f"all visdom UI files present in {args.static_dir or default_static_dir()}")
        return 0
    try:
        install(args.static_dir, force=args.force)
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`assets {install,check}`."""
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("action", choices=["install", "check"])
    p.add_argument("--force", action="store_true", help="re-install every file (install only)")
    p.add_argument("--static-dir", default=None, help="default: the installed visdom's static/ folder")


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m vae_visdom.serve.assets")  # `... assets check`
    add_arguments(_parser)
    raise SystemExit(run(_parser.parse_args()))
