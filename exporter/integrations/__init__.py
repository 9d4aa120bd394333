"""Integrations with the frameworks a bot runs on (Celery); each loads its framework only when
imported, and the framework is an extra (``pip install opsstack[celery]``)."""
