"""The JSON event channel: message models, the hub that routes events, the WebSocket endpoints."""
