"""The JSON frames of the WebSocket protocol.

Server frames are always `{"type", "event_id", "conversation_id", "data"}`; `event_id` is set only
for outbox events (the value to reconnect with as `?since=`). Client frames are `{"type": "typing",
"conversation_id": ...}` and `{"type": "ping"}`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from parley.ids import is_valid_id


class ServerFrame(enum.StrEnum):
    HELLO = "hello"
    RESYNC_REQUIRED = "resync_required"
    PRESENCE = "presence"
    TYPING = "typing"
    PONG = "pong"
    ERROR = "error"


class ClientFrame(enum.StrEnum):
    TYPING = "typing"
    PING = "ping"


# Close codes. 4008 is ours (the 4000-4999 range is for applications): the client is too slow to
# keep up with its own events.
CLOSE_SLOW_CONSUMER = 4008
# The user was suspended by a moderator: their connections close at once, on every node.
CLOSE_SUSPENDED = 4003
CLOSE_GOING_AWAY = 1001


def encode_frame(
    frame_type: str, data: dict[str, Any], *, event_id: int | None = None, conversation_id: str | None = None
) -> str:
    return json.dumps(
        {"type": frame_type, "event_id": event_id, "conversation_id": conversation_id, "data": data},
        separators=(",", ":"),
    )


def error_frame(code: str, message: str) -> str:
    return encode_frame(ServerFrame.ERROR, {"code": code, "message": message})


@dataclass(frozen=True)
class TypingFrame:
    conversation_id: str


@dataclass(frozen=True)
class PingFrame:
    pass


class FrameError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_client_frame(text: str) -> TypingFrame | PingFrame:
    try:
        frame = json.loads(text)
    except ValueError:
        raise FrameError("invalid_json", "frames are JSON objects") from None
    if not isinstance(frame, dict):
        raise FrameError("invalid_frame", "frames are JSON objects with a 'type'")
    kind = frame.get("type")
    if kind == ClientFrame.PING:
        return PingFrame()
    if kind == ClientFrame.TYPING:
        conversation_id = frame.get("conversation_id")
        if not isinstance(conversation_id, str) or not conversation_id:
            raise FrameError("invalid_frame", "typing needs a 'conversation_id'")
        if not is_valid_id(conversation_id):
            # NUL, a lone surrogate or a long string must never reach a query or the bus.
            raise FrameError("invalid_frame", "'conversation_id' must be a conversation id")
        return TypingFrame(conversation_id)
    raise FrameError("unknown_type", f"unknown frame type; send one of: {', '.join(ClientFrame)}")
