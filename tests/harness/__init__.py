"""Real services for the test suite, started on 127.0.0.1 and stopped by PID.

Each module here knows how to install (when missing), build (cached) and start one
service: ``prometheus``, ``alertmanager``, ``elasticsearch``, ``otelcol``, ``smtp``,
``telegram``. ``tests/conftest.py`` wraps them as session fixtures;
``python -m tests.harness up|down`` runs them for people (``make services-up``).
"""
