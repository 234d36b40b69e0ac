"""Integrations with engines that users already run. Each one needs its own extra
(from a clone: ``.venv/bin/pip install '.[serve]'``, or ``'.[celery]'``) and is imported only by those
who use it."""
