"""The visdom versions vae-visdom supports, which one is installed, and whether it imports here."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# visdom version -> the Python it installs on (visdom 0.3 refuses to import below Python 3.12)
SUPPORTED = {"0.2.4": "Python 3.8-3.11", "0.3.0": "Python >= 3.12"}
HERE = Path(__file__).parent


class UnsupportedVisdom(RuntimeError):
    """The installed visdom is not one vae-visdom knows (its UI files, its server internals)."""


def supported_text() -> str:
    return ", ".join(f"visdom {v} ({py})" for v, py in SUPPORTED.items())


def visdom_dir() -> Path | None:
    """site-packages/visdom, found without importing it (importing visdom pulls numpy, requests, ...)."""
    spec = importlib.util.find_spec("visdom")
    return Path(spec.origin).parent if spec is not None and spec.origin is not None else None


def installed_version() -> str | None:
    """The installed visdom's `__version__` (its VERSION file), None when visdom is not installed."""
    folder = visdom_dir()
    if folder is None:
        return None
    try:
        return (folder / "VERSION").read_text().strip()
    except OSError:
        return "no_version_file"  # what visdom itself falls back to


def manifest_path(version: str | None = None) -> Path:
    """assets-VERSION.json: the UI files of that visdom; UnsupportedVisdom names the supported ones."""
    version = installed_version() if version is None else version
    if version not in SUPPORTED:
        have = "no visdom is installed" if version is None else f"visdom {version} is installed"
        raise UnsupportedVisdom(f"{have}; vae-visdom supports {supported_text()}: "
                                f"pip install 'visdom==0.2.4' (Python <= 3.11) or 'visdom==0.3.0' (Python >= 3.12)")
    return HERE / f"assets-{version}.json"


def is_old_visdom(version: str | None = None) -> bool:
    """True for visdom 0.2.x (unsalted password hash, compare handler that needs mending)."""
    return ((installed_version() if version is None else version) or "").startswith("0.2.")


def visdom_problem() -> str | None:
    """None when visdom imports and is a supported version, else one line saying what is wrong."""
    try:
        import visdom  # noqa: F401  (the check is the import itself)
    except (ImportError, RuntimeError) as err:  # visdom 0.3 raises RuntimeError below Python 3.12
        return (f"this command needs visdom, which cannot be imported here ({type(err).__name__}: {err}); "
                f"supported: {supported_text()}")
    try:
        manifest_path()
    except UnsupportedVisdom as err:
        return str(err)
    return None


class _NoTorch:
    """A meta-path finder under which `import torch` fails as where torch is not installed (sys.modules keeps no
    placeholder for other libraries to trip on)."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (not loaded by the visdom server)", name=name)
        return None


def without_torch() -> None:
    """The server and the runs home never need torch, but `import visdom` tries it (its client converts
    tensors): seconds and ~200 MB saved by making that import fail. For those processes only (call it before
    visdom is imported); a process that has torch keeps it."""
    if "torch" not in sys.modules and not any(isinstance(f, _NoTorch) for f in sys.meta_path):
        sys.meta_path.insert(0, _NoTorch())
