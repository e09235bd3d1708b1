"""Names of the tasks other processes send by name, importable without the task modules (the API
wakes the dispatcher without importing Celery tasks, Pillow or PyAV)."""

from __future__ import annotations

DISPATCH_TASK = "parley.dispatch_outbox"
CONSUME_TASK = "parley.consume_events"
# Beat's purge of deleted messages' retained text (PARLEY_RETAIN_DELETED_DAYS).
PURGE_DELETED_TASK = "parley.purge_deleted_content"
# Beat's look for relationships that expired (conversation.policy_changed to both members).
RELATIONSHIP_EXPIRY_TASK = "parley.announce_expired_relationships"
