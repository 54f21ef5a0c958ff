"""REST routers. Only ``server.app`` imports this package."""

from fastapi import APIRouter

from . import agents, docs, documents, events, health, workspaces

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(workspaces.router)
api_router.include_router(documents.router)
api_router.include_router(agents.router)
api_router.include_router(events.router)
api_router.include_router(docs.router)

__all__ = ["api_router"]
