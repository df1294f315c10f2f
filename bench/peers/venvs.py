"""One virtual environment per peer under .cache/peers/<name>/, never the project's venv.

Created on first use with ``python3 -m venv`` and ``pip install -r bench/peers/requirements-<name>.txt``
from whatever package index pip is configured with; a stamp of the requirements file's text makes an
edited pin reinstall. The peers are far too big for CI, which never calls this.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
CACHE = Path(".cache/peers")
STAMP = ".requirements"


def requirements(name: str) -> Path:
    return HERE / f"requirements-{name}.txt"


def venv_dir(name: str) -> Path:
    return CACHE / name


def python(name: str) -> Path:
    return venv_dir(name) / "bin" / "python"


def is_ready(name: str) -> bool:
    """The venv exists and was installed from the current requirements file."""
    stamp = venv_dir(name) / STAMP
    return python(name).exists() and stamp.exists() and stamp.read_text() == requirements(name).read_text()


def ensure(name: str) -> Path:
    """The peer's interpreter, creating or updating its venv first (minutes, the first time)."""
    if is_ready(name):
        return python(name)
    target = venv_dir(name)
    print(f"peers: installing {name} into {target} (once) ...", flush=True)
    if not python(name).exists():
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(target)], check=True)
    pip = [str(python(name)), "-m", "pip", "install", "-q", "-r", str(requirements(name))]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"pip install for peer {name} failed: {done.stderr[-2000:]}")
    (target / STAMP).write_text(requirements(name).read_text())
    return python(name)


def installed_versions(name: str, packages: tuple[str, ...]) -> dict[str, str]:
    """The versions pip reports inside the peer's venv, for the report."""
    done = subprocess.run([str(python(name)), "-m", "pip", "freeze"], capture_output=True, text=True)
    wanted = {p.lower() for p in packages}
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        package, _, version = line.partition("==")
        if package.lower() in wanted:
            out[package.lower()] = version
    return out
