"""Names and queue of the media tasks, apart from their code, so that sending one (the consumers,
the API's process) does not import Pillow and PyAV."""

from __future__ import annotations

from parley.outbox.consumers import WorkKind

PROCESS_TASK = "parley.process_attachment"
DELETE_FILES_TASK = "parley.delete_attachment_files"
PURGE_TASK = "parley.purge_unattached_uploads"
MEDIA_QUEUE = WorkKind.MEDIA.value
# Processing tasks go behind the media queue's quick tasks (the consumers' hand-offs, file
# deletions): otherwise an upload's hand-off waits behind every image ahead of it, and then its
# processing task waits behind them all again. Redis honours it (0 is the highest priority, and
# what messages without one get); the embedded broker ignores it.
PROCESSING_PRIORITY = 6
