"""Celery workers: keep the models warm and turn images into Detection rows."""
