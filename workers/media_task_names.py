"""Names and queue of the media tasks, apart from their code, so that sending one (the consumers,
the API's process) does not import Pillow and PyAV."""

from __future__ import annotations

from parley.outbox.consumers import WorkKind

PROCESS_TASK = "parley.process_attachment"
DELETE_FILES_TASK = "parley.delete_attachment_files"
PURGE_TASK = "parley.purge_unattached_uploads"
MEDIA_QUEUE = WorkKind.MEDIA.value
