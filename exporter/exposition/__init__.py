"""Serving ``/metrics``: in the bot (:func:`start_metrics_server`) or standalone from on-disk
state (``opsstack serve``, :class:`DiskCollector`).

Both negotiate OpenMetrics (with exemplars) or the classic text format 0.0.4 from the scrape's
``Accept`` header, bind to ``METRICS_ADDR`` (default 127.0.0.1), optionally require basic auth
(``METRICS_AUTH_USERNAME``/``METRICS_AUTH_PASSWORD``) and record their render time in
``bot_exporter_scrape_duration_seconds``.

Multiple worker processes: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by the
workers (cleared before they start) for every process, before anything imports
``prometheus_client``. Each worker's metrics then live in files there; the server (started in
one process only, or by ``opsstack serve``) adds them up at scrape time like
prometheus_client's ``MultiProcessCollector``, after folding the files of dead workers into
totals (:mod:`.multiproc`), so scrapes stay fast however many workers have come and gone. Call
``prometheus_client.multiprocess.mark_process_dead(pid)`` when a worker exits (the Celery
integration does). In that mode gauges carry a ``pid`` label, a dead worker's gauges are
dropped, and the info metric is not exported (prometheus_client's limits).
"""
from __future__ import annotations

from .disk import DiskCollector, backup_families, integrity_families, spool_families
from .server import MetricsServer, render, start_metrics_server

__all__ = ["DiskCollector", "MetricsServer", "backup_families", "integrity_families", "render",
           "spool_families", "start_metrics_server"]
