"""Celery's entry module: ``celery -A workers.main worker``.

Building the app object opens no connection and loads no model; that happens
when a worker process starts.
"""

from workers.app import create_worker_app

app = create_worker_app()
