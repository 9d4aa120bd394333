"""Celery: opsstack in every worker process, scheduled backups by beat, and each task measured,
logged and traced.

    from celery import Celery
    from exporter.integrations.celery import install

    app = Celery("bot", broker="redis://127.0.0.1:6379/0")
    install(app)                       # the backup task, worker hooks, task hooks
    app.conf.beat_schedule = backup_manager.create_backup_schedule()

:func:`install` registers :data:`SCHEDULED_BACKUP_TASK` (the name ``create_backup_schedule()``
uses), and connects Celery's signals:

* each worker process (``worker_process_init``) runs ``runtime.start()`` once with the settings
  of its environment, with the in-process backup scheduler off (beat owns the schedule) and no
  ECS lines on the console while Celery redirects it into its log (they would be written twice), and
  stops it at shutdown, marking its metrics files dead in multiprocess mode
  (``PROMETHEUS_MULTIPROC_DIR``);
* every task is a profiler operation ``celery.<task name>`` (duration, outcome, slow tasks), a
  span, and one ECS line at its end with ``celery.task.*`` labels;
* the caller's trace context travels in the message headers (W3C ``traceparent``), so a download
  the bot starts and a worker finishes is one trace, and both log lines carry its ``trace.id``;
* beat (``beat_init``) starts opsstack like a worker, and each scheduled send is a profiler
  operation ``celery.beat <entry>`` and one ECS line (``event.action: celery-beat-send``): with
  the broker down, Celery's beat logs the send it could not make and skips that run (the next
  goes at the next period, nothing piles up); here it is also counted
  (``bot_operation_errors_total``) and logged as a failure naming the entry and the error's type
  (never the broker URL), and the first send after the broker returns logs the recovery.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from .. import tracing
from ..backup_manager import scheduled_backup
from ..backup_manager.manager import CELERY_TASK as SCHEDULED_BACKUP_TASK
from ..logger_manager import logger_manager
from ..profiler import profiler

log = logging.getLogger("exporter.integrations.celery")
_worker: dict[str, Any] = {"runtime": None, "settings": None, "app": None}


class _RunningTask:
    """What a task's start leaves for its end: the profiler block, the span and its context."""

    __slots__ = ("block", "span", "token", "started", "failure")

    def __init__(self, block: Any, span: Any, token: Any) -> None:
        self.block, self.span, self.token = block, span, token
        self.started = time.perf_counter()
        self.failure: BaseException | None = None


_running: dict[str, _RunningTask] = {}


def install(app: Any, settings: Any = None) -> None:
    """Register the backup task on ``app`` and connect the worker and task hooks (once).
    Worker processes start opsstack with ``settings`` (default: their environment)."""
    from celery import signals

    _worker["settings"], _worker["app"] = settings, app
    app.task(name=SCHEDULED_BACKUP_TASK)(scheduled_backup)
    hooks = ((signals.beat_init, _start_beat),
             (signals.worker_process_init, _start_worker_process),
             (signals.worker_process_shutdown, _stop_worker_process),
             (signals.before_task_publish, _inject_trace_context),
             (signals.task_prerun, _task_started),
             (signals.task_failure, _task_failed),
             (signals.task_postrun, _task_finished))
    for signal, hook in hooks:
        signal.connect(hook, weak=False, dispatch_uid=f"opsstack-{hook.__name__}")


def _start_worker_process(**_: Any) -> None:
    from .. import runtime
    from ..config import load_settings

    if _worker["runtime"] is None:
        settings = _worker["settings"] or load_settings()
        # Celery turns what is written to stdout/stderr into log records (worker_redirect_stdouts):
        # the ECS lines on the console would come back as records and be written a second time.
        redirected = _worker["app"] is not None and _worker["app"].conf.worker_redirect_stdouts
        _worker["runtime"] = runtime.start(settings.replace(
            BACKUP_SCHEDULER="celery", LOG_CONSOLE=settings.logging.console and not redirected))
        log.info("opsstack started in Celery worker process %d", os.getpid())


def _stop_worker_process(**_: Any) -> None:
    if _worker["runtime"] is not None:
        _worker["runtime"].stop()
        _worker["runtime"] = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def _start_beat(sender: Any = None, **_: Any) -> None:
    """Beat's process: opsstack on, stopped at exit, and each scheduled send measured."""
    import atexit

    _start_worker_process()
    atexit.register(_stop_worker_process)
    scheduler = sender.scheduler
    scheduler.apply_async = _measured_send(scheduler.apply_async)


def _measured_send(send: Any) -> Any:
    """``Scheduler.apply_async`` as a profiler operation and an ECS line per send; what it raises
    goes on to Celery (which logs it and skips the run)."""
    failing: set[str] = set()

    def apply_async(entry: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with profiler.profile_sync(f"celery.beat {entry.name}"):
                result = send(entry, *args, **kwargs)
        except Exception as exc:
            failing.add(entry.name)
            cause = exc.__cause__ or exc.__context__ or exc
            logger_manager.log_event(
                "celery-beat-send", "failure", f"beat could not send {entry.name} ({entry.task}): "
                f"{type(cause).__name__}; the run is skipped, the next is due in one period",
                level=logging.ERROR, celery_task_name=entry.task, celery_beat_entry=entry.name,
                error_type=type(cause).__name__)
            raise
        recovered = entry.name in failing
        failing.discard(entry.name)
        logger_manager.log_event(
            "celery-beat-send", "success", f"beat sent {entry.name} ({entry.task})"
            + (" again: the broker is back" if recovered else ""),
            celery_task_name=entry.task, celery_beat_entry=entry.name,
            celery_task_id=getattr(result, "id", None))
        return result

    return apply_async


def _inject_trace_context(headers: dict | None = None, **_: Any) -> None:
    """Put the current trace context into the outgoing message's headers."""
    if headers is None or not tracing.enabled():
        return
    from opentelemetry.propagate import inject

    inject(headers)


def _carrier(task: Any) -> dict[str, Any]:
    request = getattr(task, "request", None)
    carrier = dict(getattr(request, "headers", None) or {})
    for name in ("traceparent", "tracestate"):  # Celery 5 moves custom headers up a level
        value = getattr(request, name, None)
        if value is not None:
            carrier.setdefault(name, value)
    return carrier


def _task_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    span = token = None
    if tracing.enabled():
        from opentelemetry import context
        from opentelemetry.propagate import extract

        token = context.attach(extract(_carrier(task)))
        span = tracing.span(f"celery.task {task.name}", celery_task_name=task.name,
                            celery_task_id=task_id)
        span.__enter__()
    block = profiler.profile_sync(f"celery.{task.name}")
    block.__enter__()
    _running[task_id] = _RunningTask(block, span, token)


def _task_failed(task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    running = _running.get(task_id)
    if running is not None:
        running.failure = exception


def _task_finished(task_id: str | None = None, task: Any = None, state: str | None = None,
                   **_: Any) -> None:
    running = _running.pop(task_id, None)
    if running is None:
        return
    failure = running.failure
    exc_info = (type(failure), failure, failure.__traceback__) if failure else (None, None, None)
    running.block.__exit__(*exc_info)
    duration = time.perf_counter() - running.started
    failed = failure is not None or state == "FAILURE"
    logger_manager.log_event(
        "celery-task", "failure" if failed else "success",
        f"task {task.name} {task_id} {state or 'done'} in {duration:.3f}s",
        level=logging.ERROR if failed else logging.INFO, duration=duration,
        celery_task_name=task.name, celery_task_id=task_id, celery_task_state=state or None)
    if running.span is not None:
        from opentelemetry import context

        running.span.__exit__(*exc_info)
        context.detach(running.token)
