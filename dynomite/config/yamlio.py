# -*- test-case-name: tests.unit.test_config -*-
"""
Reading configuration files: strict YAML in, plain Python values out.

Both kinds of file this project reads, a node's Dynomite YAML
(:mod:`dynomite.config.model`) and the launcher's cluster file
(:mod:`dynomite.launcher.topology_file`), are loaded by :func:`load_yaml`,
which refuses a key given twice (YAML would silently keep the last one) and
reports unreadable or malformed files as a :class:`ConfigError`. The
parsers of both describe values with :func:`show` and raise
:class:`Invalid` for a bad one, so their errors read alike: file, key,
reason on one line.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping, Optional

import yaml

__all__ = ["ConfigError", "Invalid", "load_yaml", "show", "unknown_key"]


class ConfigError(Exception):
    """
    A configuration problem: which file, which key, and why.

    ``str(e)`` is ``"<source>: <key>: <reason>"`` on one line, fit to print
    as the node's last words. ``key`` is a top-level key of the pool, or
    ``"<file>"`` (the file could not be read or parsed) or ``"<root>"`` (the
    document is not a single pool mapping).
    """

    def __init__(self, source: str, key: str, reason: str):
        reason = " ".join(str(reason).splitlines())
        super().__init__(source, key, reason)
        self.source = source
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.reason}"


class Invalid(ValueError):
    """
    A value is wrong: ``reason`` says why, fit for a person.

    ``key`` says where, when the raiser knows (a dotted path such as
    ``addresses.base``); otherwise the caller, which knows which key it was
    parsing, turns it into a :class:`ConfigError`. ``str(e)`` is the reason.
    """

    def __init__(self, reason: str, key: Optional[str] = None):
        super().__init__(reason)
        self.reason = reason
        self.key = key


class _DuplicateKey(Exception):
    def __init__(self, key: str, line: int):
        super().__init__(key, line)
        self.key = key
        self.line = line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice."""

    def construct_mapping(self, node, deep=False):  # type: ignore[override]
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise _DuplicateKey(str(key_node.value), key_node.start_mark.line + 1)
            seen.add(ident)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str) -> Any:
    """
    The YAML document in ``path``, loaded safely.

    A file that cannot be read, is not UTF-8 or is not valid YAML raises
    ``ConfigError(path, "<file>", reason)`` (with the line and column of a
    syntax error); a mapping key given twice raises ``ConfigError(path,
    key, "duplicate key (again at line N)")``.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(path, "<file>", f"cannot read: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, "<file>", f"not UTF-8 text (byte {e.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except _DuplicateKey as e:
        raise ConfigError(path, e.key, f"duplicate key (again at line {e.line})") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, "<file>", _yaml_reason(e)) from None


def _yaml_reason(e: yaml.YAMLError) -> str:
    if isinstance(e, yaml.MarkedYAMLError):
        what = e.problem or e.context or "syntax error"
        mark = e.problem_mark or e.context_mark
        if mark is not None:
            return f"invalid YAML: {what} (line {mark.line + 1}, column {mark.column + 1})"
        return f"invalid YAML: {what}"
    return f"invalid YAML: {e}"


def show(value: Any) -> str:
    """Describe a YAML value in an error reason, briefly."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def unknown_key(key: Any, known: Iterable[str]) -> str:
    """
    Why ``key`` is refused: ``unknown key``, with the closest known key if
    one is close, else the known keys when they are few enough to read.
    """
    known = list(known)
    close = difflib.get_close_matches(str(key), known, n=1)
    if close:
        return f"unknown key; did you mean {close[0]!r}?"
    if len(known) <= _LISTED_KEYS:
        return f"unknown key; expected one of {', '.join(known)}"
    return "unknown key"


#: Most known keys :func:`unknown_key` lists.
_LISTED_KEYS = 8
