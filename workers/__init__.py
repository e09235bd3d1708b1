"""Celery: everything that runs after a commit. workers/app.py is the app `parley worker`, `parley
beat` and `celery -A workers.app` run; celery_app.py configures it (queues, limits, beat); tasks.py
holds the dispatcher and consumer tasks; consumers.py is the one place consumers are registered."""
