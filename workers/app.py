"""The process-wide Celery app, configured from the environment (PARLEY_*): what `parley worker`,
`parley beat` and `celery -A workers.app worker|beat|inspect ...` run."""

from __future__ import annotations

from parley.config import get_settings
from workers.celery_app import check_limits, create_celery_app

app = create_celery_app(get_settings())
# Load the consumers now: a missing module or a bad limit stops the worker at start-up, not at the
# first event.
check_limits(app)

__all__ = ["app"]
