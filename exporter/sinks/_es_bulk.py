"""``_bulk`` bodies of the Elasticsearch sink and the classification of the node's answer.

A record comes with its deterministic ``_id`` (see :mod:`._log_files`: its place in the log file,
or ``<producer>-<sequence>`` for a line that has none), gets the fields ``agent.ephemeral_id`` /
``event.sequence``, and is written with ``create``: an ``_id`` the node already holds answers 409,
counted as a duplicate (not indexed twice, not an error). Bodies are built as bytes in one pass,
with no object per record: from the queue's lines, or from a chunk of spool lines
``<levelno>\\t<_id>\\t<json>``. How much of the answer is asked for (``filter_path``) depends on
whether 409s are expected: see :func:`exchange`.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

from .spool import Record

RETRYABLE = frozenset((429, 500, 502, 503, 504))

Taken = list[tuple[int, bytes, bytes]]  # records taken from the queue: [(levelno, line, _id)]

# A spool line ``<levelno>\t<_id>\t<json>`` made the action line of a ``_bulk`` body and its
# document in one pass over a whole chunk, with no object per record.
_SPOOL_LINE_HEAD = re.compile(rb"^\d+\t([^\t\n]*)\t", re.MULTILINE)
FILTER = "errors,items.*.status,items.*.error"


class BulkEncoder:
    """The bodies and spool lines of one producer's records for the data stream ``index``."""

    def __init__(self, index: str, producer: str):
        self.index = index
        self.producer = producer
        self._prefix = b'{"agent.ephemeral_id":"%s","event.sequence":' % producer.encode()
        # action line and document of a fresh record in one step: % (_id, sequence, line[1:])
        self._fresh = b'{"create":{"_index":"%s","_id":"%%s"}}\n%s%%d,%%s' % (index.encode(), self._prefix)
        # a fresh record as a spool line in one step: % (levelno, _id, sequence, line[1:])
        self._spool_line = b"%%d\t%%s\t%s%%d,%%s" % self._prefix
        self._replayed_action = b'{"create":{"_index":"%s","_id":"\\1"}}\n' % index.encode()

    def fresh(self, first: int, taken: Taken) -> bytes:
        """The ``_bulk`` body of records taken from the queue, numbered from ``first``."""
        fresh = self._fresh
        return b"".join([fresh % (rid, sequence, line[1:]) for sequence, (_, line, rid) in enumerate(taken, first)])

    def spool_block(self, first: int, taken: Taken) -> bytearray:
        """Records taken from the queue as spool lines, each made in one step."""
        template = self._spool_line
        data = bytearray()
        for sequence, (level, line, rid) in enumerate(taken, first):
            data += template % (level, rid, sequence, line[1:])
        return data

    def records(self, first: int, taken: Taken) -> list[Record]:
        """Taken records as ``(levelno, _id, document)``, for the spool and the dead letters."""
        prefix = self._prefix
        # line is '{...}\n': the two fields go in after its "{", the newline goes
        return [(level, rid.decode(), b"%s%d,%s" % (prefix, sequence, line[1:-1]))
                for sequence, (level, line, rid) in enumerate(taken, first)]

    def replayed(self, lines: bytes) -> bytes:
        """The ``_bulk`` body of spool ``lines``: create each in the index with its ``_id``."""
        return _SPOOL_LINE_HEAD.sub(self._replayed_action, lines)


def one_line_each(taken: Taken) -> Taken:
    """``taken`` with every line one line ending in a newline (a sink fed by hand, not the handler)."""
    if all([line[-1:] == b"\n" for _, line, _ in taken]):
        return taken
    return [(level, b" ".join(line.split(b"\n")).strip() + b"\n", rid) for level, line, rid in taken]


def exchange(client, body: bytes, replay: bool) -> tuple[dict, bool]:
    """Send ``body``; the answer with each item's status and error when any failed, and whether
    it is the answer of a second request. A ``replay`` (records sent before, or read back) asks
    for the items at once: its 409s are duplicates. A fresh batch asks only whether all went well
    (parsing 2000 items costs the worker about 2 ms a batch), and when not, sends it once more
    asking for the items: the 409s of that second answer include what the first one created."""
    if replay:
        return client.bulk(body=body, filter_path=FILTER), False
    response = client.bulk(body=body, filter_path="errors")
    if not response.get("errors"):
        return response, False
    return client.bulk(body=body, filter_path=FILTER), True


class Outcome(NamedTuple):
    shipped: int  # created
    duplicates: int  # already there (409): a re-sent batch, a line read back after a restart
    retry: list[Record]  # refused for now (429, 5xx): to the spool
    dead: list[tuple[Record, object]]  # refused for good (a 400 mapping error), with the reason


def classify(response: dict, count: int, records: Callable[[], list[Record]], again: bool = False) -> Outcome:
    """What became of the ``count`` records of a body. ``records()`` gives them in the body's
    order; it is called only when some failed (the common clean batch never builds them). In the
    answer to a body sent ``again``, a 409 may be a record the first request created: shipped."""
    if not response.get("errors"):
        return Outcome(count, 0, [], [])
    retry: list[Record] = []
    dead: list[tuple[Record, object]] = []
    shipped = duplicates = 0
    for record, item in zip(records(), response["items"]):
        result = item.get("create") or next(iter(item.values()))
        status = result.get("status", 500)
        if status < 300:
            shipped += 1
        elif status == 409 and not again:
            duplicates += 1
        elif status == 409:
            shipped += 1
        elif status in RETRYABLE:
            retry.append(record)
        else:
            dead.append((record, result.get("error")))
    return Outcome(shipped, duplicates, retry, dead)
