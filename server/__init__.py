"""Yjs-compatible real-time collaboration server."""
