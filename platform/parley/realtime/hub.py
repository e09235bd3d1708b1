"""The connections of one API process, by user, and who should hear of what.

Outbox events go to the connections of the conversation's two members. Presence goes to every
local user who shares a conversation with the user it is about: each connected user's partners are
loaded once when their first connection arrives and kept current from `conversation.created`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from parley.events import EventType
from parley.realtime.connection import Connection
from parley.realtime.frames import ServerFrame, encode_frame
from parley.services.event_feed import FeedEvent


@dataclass
class LocalUser:
    partners: dict[str, str]  # conversation id -> the other member
    connections: set[Connection] = field(default_factory=set)
    # Users this user blocked: their typing and presence are not shown to this user.
    blocked: set[str] = field(default_factory=set)


class Hub:
    def __init__(self) -> None:
        self.users: dict[str, LocalUser] = {}
        # partner id -> the local users who share a conversation with them (for presence).
        self._watchers: defaultdict[str, set[str]] = defaultdict(set)

    def connections(self) -> list[Connection]:
        return [c for user in self.users.values() for c in user.connections]

    def has_user(self, user_id: str) -> bool:
        return user_id in self.users

    def add(self, connection: Connection, partners: dict[str, str] | None, blocked: set[str] | None = None) -> None:
        """Register a connection. `partners` (and `blocked`) are needed only for a user's first
        local connection."""
        user = self.users.get(connection.user_id)
        if user is None:
            user = LocalUser(partners=dict(partners or {}), blocked=set(blocked or ()))
            self.users[connection.user_id] = user
            for partner_id in user.partners.values():
                self._watchers[partner_id].add(connection.user_id)
        user.connections.add(connection)

    def remove(self, connection: Connection) -> bool:
        """Unregister a connection; True if it was its user's last one here."""
        user = self.users.get(connection.user_id)
        if user is None:
            return False
        user.connections.discard(connection)
        if user.connections:
            return False
        del self.users[connection.user_id]
        for partner_id in user.partners.values():
            watchers = self._watchers.get(partner_id)
            if watchers is not None:
                watchers.discard(connection.user_id)
                if not watchers:
                    del self._watchers[partner_id]
        return True

    def partner_in(self, user_id: str, conversation_id: str) -> str | None:
        user = self.users.get(user_id)
        return None if user is None else user.partners.get(conversation_id)

    def deliver_event(self, event: FeedEvent) -> None:
        if event.type == EventType.CONVERSATION_CREATED:
            self._learn_conversation(event)
        present = [user for user in map(self.users.get, event.member_ids) if user is not None]
        if not present:  # most events concern no one on this process: do not even encode them
            return
        frame = encode_frame(event.type, event.payload, event_id=event.id, conversation_id=event.conversation_id)
        for user in present:
            for connection in user.connections:
                connection.offer(frame, event.id)

    def deliver_presence(self, user_id: str, data: dict[str, object]) -> None:
        watchers = self._watchers.get(user_id)
        if not watchers:
            return
        frame = encode_frame(ServerFrame.PRESENCE, data)
        for watcher_id in watchers:
            if user_id in self.users[watcher_id].blocked:
                continue
            for connection in self.users[watcher_id].connections:
                connection.offer(frame)

    def deliver_typing(self, to_user_id: str, conversation_id: str, data: dict[str, object]) -> None:
        user = self.users.get(to_user_id)
        if user is None or data.get("user_id") in user.blocked:
            return
        frame = encode_frame(ServerFrame.TYPING, data, conversation_id=conversation_id)
        for connection in user.connections:
            connection.offer(frame)

    def _learn_conversation(self, event: FeedEvent) -> None:
        if event.conversation_id is None or len(event.member_ids) != 2:
            return
        first, second = event.member_ids
        self.learn(first, event.conversation_id, second)
        self.learn(second, event.conversation_id, first)

    def set_blocked(self, user_id: str, blocked: set[str]) -> None:
        user = self.users.get(user_id)
        if user is not None:
            user.blocked = set(blocked)

    def learn(self, user_id: str, conversation_id: str, partner_id: str) -> None:
        user = self.users.get(user_id)
        if user is not None and conversation_id not in user.partners:
            user.partners[conversation_id] = partner_id
            self._watchers[partner_id].add(user_id)
