"""Integrations with engines that users already run. Each one needs its own extra
(``pip install 'dkron-exec[apscheduler]'``) and is imported only by those who use it."""
