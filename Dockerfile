# The real-time collaboration service: python -m server on port 3006.
# Build: docker build -t realtime-collaboration .   Run: see docker-compose.realtime-collaboration.yml
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ENVIRONMENT=production \
    HOST=0.0.0.0 \
    PORT=3006

WORKDIR /app

# Dependencies first, from pyproject.toml alone (empty packages stand in for the source), so this
# layer is rebuilt only when the dependencies change, not on every source edit.
COPY pyproject.toml README.md LICENSE ./
RUN mkdir -p server rest crdt_store \
    && touch server/__init__.py rest/__init__.py crdt_store/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes realtime-collaboration \
    && rm -rf server rest crdt_store build ./*.egg-info

COPY server ./server
COPY rest ./rest
COPY crdt_store ./crdt_store
# The browser demo's built assets (served at /demo; Node is not needed to run it).
COPY web_demo/dist ./web_demo/dist
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && groupadd --system --gid 10001 collab \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin collab \
    && mkdir -p /app/data \
    && chown collab /app/data

USER 10001:10001
EXPOSE 3006
VOLUME ["/app/data"]

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "server", "healthcheck"]

ENTRYPOINT ["python", "-m", "server"]
