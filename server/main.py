"""``uvicorn server.main:app``: the app built from the environment, logging as ``python -m server``
does (one format, uvicorn's lines included, secrets redacted)."""

from .app import create_app
from .config import load_settings
from .logs import configure_logging, quiet_refusals

settings = load_settings()
configure_logging(settings.log_level, json_lines=settings.json_logs, secrets=[settings.jwt_secret or ""])
quiet_refusals()
app = create_app(settings)
