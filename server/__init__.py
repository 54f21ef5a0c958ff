"""Yjs-compatible real-time collaboration server."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("realtime-collaboration")
except PackageNotFoundError:  # run from a source tree that was not installed
    __version__ = "0+unknown"
