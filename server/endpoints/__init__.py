"""The WebSocket transports: the Yjs sync endpoint, the JSON event channel, and the handshake
they share. Each authenticates, parses, calls one application operation, and maps a refusal to
an HTTP status or a close code (``handshake``)."""
