# -*- test-case-name: tests.unit.test_benchmark -*-
"""
Which Python runs the nodes.

``cpython`` is the Python running the benchmark, with the ``twistd`` next
to it (the project's own venv). ``pypy`` is Debian's ``pypy3`` with a
venv of its own, ``.bench/pypy-venv`` under the project, created on demand
(``apt-get install pypy3 pypy3-venv pypy3-dev`` first when pypy3 is
missing and we are root). Any other Python can be named by path
(``--node-python``): a Python inside a venv that already has ``twistd``
is used as it is, otherwise it gets a venv under ``.bench/`` too.

The project is installed editable into such a venv, so the nodes run the
working tree's code, with its dependencies except hiredis (setup.cfg
installs it on CPython only). Two things PyPy 3.9 needs: mmh3 has no PyPy
wheel and is compiled (hence ``pypy3-dev``), and recent cryptography
releases (pulled in by txredisapi's ``twisted[tls]``) have no PyPy 3.9
wheels and need Rust to build, so pip is told to take cryptography from
wheels only, which settles on an older pyOpenSSL and cryptography pair.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict

__all__ = ["Interpreter", "InterpreterError", "cpython", "for_python", "pypy"]

#: A venv is reinstalled when any of these project files change.
_STAMPED_FILES = ("setup.cfg", "pyproject.toml")
_STAMP = ".dynomite-bench-stamp"
PYPY_PACKAGES = ("pypy3", "pypy3-venv", "pypy3-dev")

Say = Callable[[str], None]


class InterpreterError(Exception):
    """An interpreter could not be found, installed or given a venv; the message says what to do."""


@dataclass(frozen=True)
class Interpreter:
    """A Python that runs nodes: a short name, its executable and the ``twistd`` that starts a node."""

    name: str
    python: str
    twistd: str
    version: str = ""

    def describe(self) -> Dict[str, Any]:
        return {"name": self.name, "python": self.python, "twistd": self.twistd, "version": self.version}


def _version(python: str) -> str:
    code = "import platform, sys; print(platform.python_implementation(), sys.version.replace(chr(10), ' '))"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpython() -> Interpreter:
    """The Python running this benchmark and the twistd of its environment."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    if not os.path.exists(twistd):
        raise InterpreterError(f"{twistd} is missing: install the project into this Python's venv (make setup)")
    return Interpreter("cpython", sys.executable, twistd, _version(sys.executable))


def pypy(root: str, say: Say) -> Interpreter:
    """PyPy 3 (installed with apt-get if missing and allowed) with its venv in ``<root>/.bench/pypy-venv``."""
    python = shutil.which("pypy3")
    if python is None:
        _apt_install(PYPY_PACKAGES, say)
        python = shutil.which("pypy3")
        if python is None:
            raise InterpreterError("pypy3 is still not on PATH after installing it")
    else:
        missing = [pkg for pkg, present in (("pypy3-venv", _has_venv_module), ("pypy3-dev", _has_headers))
                   if not present(python)]
        if missing:
            _apt_install(tuple(missing), say)
    return _in_venv("pypy", python, os.path.join(root, ".bench", "pypy-venv"), root, say)


def for_python(spec: str, root: str, say: Say) -> Interpreter:
    """
    The Python named by ``spec`` (``PATH`` or ``NAME=PATH``): its own twistd
    if it sits in a ready venv (so an installed copy of another revision can
    be measured), else a venv under ``.bench/``.
    """
    name, _, path = spec.rpartition("=")
    python = shutil.which(path) or path
    if not os.path.exists(python):
        raise InterpreterError(f"--node-python {spec}: no such program")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name or os.path.basename(python))
    twistd = os.path.join(os.path.dirname(python), "twistd")
    if os.path.exists(twistd):
        return Interpreter(name, python, twistd, _version(python))
    digest = hashlib.sha256(os.path.realpath(python).encode()).hexdigest()[:8]
    return _in_venv(name, python, os.path.join(root, ".bench", f"venv-{name}-{digest}"), root, say)


def _has_venv_module(python: str) -> bool:
    try:
        return subprocess.run([python, "-c", "import venv, ensurepip"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _has_headers(python: str) -> bool:
    """Python.h, which compiling mmh3 for PyPy needs."""
    code = "import os, sysconfig; print(os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip() == "True"
    except (OSError, subprocess.TimeoutExpired):
        return False


def _apt_install(packages: tuple, say: Say) -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise InterpreterError(f"PyPy is missing: install it with 'sudo apt-get install {' '.join(packages)}'")
    say(f"installing {' '.join(packages)} with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise InterpreterError(f"{' '.join(argv)} failed:\n{(proc.stdout + proc.stderr).strip()[-2000:]}")


def _stamp(root: str, python: str) -> str:
    digest = hashlib.sha256(os.path.realpath(python).encode())
    for name in _STAMPED_FILES:
        try:
            with open(os.path.join(root, name), "rb") as f:
                digest.update(f.read())
        except FileNotFoundError:
            pass
    return digest.hexdigest()


def _in_venv(name: str, python: str, venv: str, root: str, say: Say) -> Interpreter:
    """A venv of ``python`` at ``venv`` holding the project (editable); created or refreshed as needed."""
    venv_python = os.path.join(venv, "bin", "python")
    twistd = os.path.join(venv, "bin", "twistd")
    stamp_path = os.path.join(venv, _STAMP)
    stamp = _stamp(root, python)
    try:
        with open(stamp_path) as f:
            current = f.read().strip() == stamp
    except FileNotFoundError:
        current = False
    if current and os.path.exists(twistd):
        return Interpreter(name, venv_python, twistd, _version(venv_python))
    if not os.path.exists(venv_python):
        say(f"creating a {name} venv in {venv} ...")
        _run([python, "-m", "venv", venv])
    say(f"installing the project into {venv} (the first time takes a few minutes: mmh3 and others are compiled) ...")
    _run([
        venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
        "--only-binary=cryptography",
        "-e", root, "--config-settings", "editable_mode=compat",
    ])
    if not os.path.exists(twistd):
        raise InterpreterError(f"{twistd} is missing after installing the project into {venv}")
    with open(stamp_path, "w") as f:
        f.write(stamp + "\n")
    return Interpreter(name, venv_python, twistd, _version(venv_python))


def _run(argv: list) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        output = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines()
                           if not line.startswith("WARNING: Location"))
        raise InterpreterError(f"{' '.join(argv)} failed (status {proc.returncode}):\n{output.strip()[-3000:]}")
