"""``uvicorn server.main:app``: the app built from the environment."""

from .app import create_app

app = create_app()
