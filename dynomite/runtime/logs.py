# -*- test-case-name: tests.unit.test_twisted_private -*-
"""
Log levels that can change while the node runs (``/setloglevel/<0-11>``).

Dynomite's verbosity runs from 0 to 11 (default 5).  Here 0-3 keep only
errors, 4 adds warnings, 5 adds information, 6 and above add debug.  The
filter wraps whatever observers twistd installed, once, when the node
starts; a ``LogPublisher`` does not list its observers publicly, so
`dynomite.runtime.twisted_private.observers` reads them.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

from dynomite.runtime.twisted_private import observers

predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_installed = False


def level_for(verbosity: int) -> LogLevel:
    if verbosity <= 3:
        return LogLevel.error
    if verbosity == 4:
        return LogLevel.warn
    if verbosity == 5:
        return LogLevel.info
    return LogLevel.debug


def set_verbosity(verbosity: int) -> str:
    """Apply a Dynomite verbosity; returns the level's name."""
    level = level_for(verbosity)
    predicate.setLogLevelForNamespace(None, level)
    return level.name


def install(publisher=globalLogPublisher) -> None:
    """Put the level filter in front of the observers logging already goes to."""
    global _installed
    if _installed:
        return
    _installed = True
    for observer in observers(publisher):
        publisher.removeObserver(observer)
        publisher.addObserver(FilteringLogObserver(observer, [predicate]))
