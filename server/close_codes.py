"""WebSocket close codes, named once with their number. Application codes are HTTP status + 4000."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CloseCode:
    code: int
    reason: str

    def because(self, detail: str) -> CloseCode:
        """The same code with a reason saying more: ``"<reason>: <detail>"``, cut to what a close
        frame carries (RFC 6455 5.5: 125 bytes with the 2-byte code)."""
        return CloseCode(self.code, reason_of(f"{self.reason}: {detail}"))


def reason_of(text: str) -> str:
    """``text`` cut to the 123 bytes of UTF-8 a close frame's reason may hold."""
    return text.encode()[:123].decode("utf-8", "ignore")


CLOSE_1000_NORMAL = CloseCode(1000, "normal closure")
CLOSE_1003_UNSUPPORTED_DATA = CloseCode(1003, "text frames are not part of the Yjs sync protocol")
CLOSE_1009_MESSAGE_TOO_BIG = CloseCode(1009, "message too big")
CLOSE_1011_INTERNAL_ERROR = CloseCode(1011, "internal error")
CLOSE_1011_RELOADED = CloseCode(1011, "document reloaded from storage after a refused update; reconnect")
CLOSE_1012_SERVICE_RESTART = CloseCode(1012, "service restarting")
CLOSE_1013_SEND_QUEUE_FULL = CloseCode(1013, "client is not reading fast enough; reconnect to resync")
CLOSE_1013_TRY_AGAIN_LATER = CloseCode(1013, "try again later")
CLOSE_1013_STORE_UNAVAILABLE = CloseCode(1013, "document storage unavailable; try again later")
CLOSE_4400_BAD_MESSAGE = CloseCode(4400, "malformed message")
CLOSE_4401_UNAUTHORIZED = CloseCode(4401, "unauthorized")
CLOSE_4401_TOKEN_EXPIRED = CloseCode(4401, "token expired")
CLOSE_4403_FORBIDDEN = CloseCode(4403, "forbidden")
CLOSE_4403_ACCESS_REVOKED = CloseCode(4403, "your access to this workspace was revoked")
CLOSE_4404_NOT_FOUND = CloseCode(4404, "not found")
CLOSE_4404_DELETED = CloseCode(4404, "document or workspace deleted")
CLOSE_4429_RATE_LIMITED = CloseCode(4429, "rate limit exceeded")


# An upgrade refused with an HTTP status, for a client that sees only close frames: HTTP status
# + 4000 (Hocuspocus's convention, 4429 for too many requests or connections), 1013 (try again
# later) for 503.
REFUSALS = {
    400: CLOSE_4400_BAD_MESSAGE,
    401: CLOSE_4401_UNAUTHORIZED,
    403: CLOSE_4403_FORBIDDEN,
    404: CLOSE_4404_NOT_FOUND,
    413: CLOSE_1009_MESSAGE_TOO_BIG,
    429: CLOSE_4429_RATE_LIMITED,
    503: CLOSE_1013_TRY_AGAIN_LATER,
}


def refusal(status: int) -> CloseCode:
    """The close code of an upgrade refused with HTTP ``status``."""
    return REFUSALS.get(status, CLOSE_4400_BAD_MESSAGE)
