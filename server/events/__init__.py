"""The JSON event channel's core: the message models and the hub that stores and routes events
(the WebSocket endpoint is ``server.endpoints.events``)."""
