"""``_bulk`` bodies of the Elasticsearch sink and the classification of the node's answer.

A record gets the deterministic ``_id`` ``<producer>-<sequence>`` and the fields
``agent.ephemeral_id`` / ``event.sequence``, and is written with ``create`` (a replayed id
answers 409, which counts as shipped). Bodies are built as bytes in one pass, with no object per
record: from the queue's lines, or from a chunk of spool lines ``<levelno>\\t<_id>\\t<json>``.
A clean batch is answered with ``{"errors":false}`` alone (``filter_path``); a batch with errors
is sent once more asking for each item's status (a replay is harmless: created ids answer 409).
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

from .spool import Record

RETRYABLE = frozenset((429, 500, 502, 503, 504))

Taken = list[tuple[int, bytes]]  # records taken from the queue: [(levelno, line)]

# A spool line ``<levelno>\t<_id>\t<json>`` made the action line of a ``_bulk`` body and its
# document in one pass over a whole chunk, with no object per record.
_SPOOL_LINE_HEAD = re.compile(rb"^\d+\t([^\t\n]*)\t", re.MULTILINE)


class BulkEncoder:
    """The bodies and spool lines of one producer's records for the data stream ``index``."""

    def __init__(self, index: str, producer: str):
        self.index = index
        self.producer = producer
        encoded = producer.encode()
        self._prefix = b'{"agent.ephemeral_id":"%s","event.sequence":' % encoded
        # action line and document of a fresh record in one step: % (sequence, sequence, line[1:])
        self._fresh = b'{"create":{"_index":"%s","_id":"%s-%%d"}}\n%s%%d,%%s' % (
            index.encode(), encoded, self._prefix)
        # a fresh record as a spool line in one step: % (levelno, sequence, sequence, line[1:])
        self._spool_line = b"%%d\t%s-%%d\t%s%%d,%%s" % (encoded, self._prefix)
        self._replayed_action = b'{"create":{"_index":"%s","_id":"\\1"}}\n' % index.encode()

    def fresh(self, first: int, taken: Taken) -> bytes:
        """The ``_bulk`` body of records taken from the queue, numbered from ``first``."""
        fresh = self._fresh
        return b"".join([fresh % (sequence, sequence, line[1:]) for sequence, (_, line) in enumerate(taken, first)])

    def spool_block(self, first: int, taken: Taken) -> bytearray:
        """Records taken from the queue as spool lines, each made in one step."""
        template = self._spool_line
        data = bytearray()
        for sequence, (level, line) in enumerate(taken, first):
            data += template % (level, sequence, sequence, line[1:])
        return data

    def records(self, first: int, taken: Taken) -> list[Record]:
        """Taken records as ``(levelno, _id, document)``, for the spool and the dead letters."""
        producer, prefix = self.producer, self._prefix
        # line is '{...}\n': the two fields go in after its "{", the newline goes
        return [(level, f"{producer}-{sequence}", b"%s%d,%s" % (prefix, sequence, line[1:-1]))
                for sequence, (level, line) in enumerate(taken, first)]

    def replayed(self, lines: bytes) -> bytes:
        """The ``_bulk`` body of spool ``lines``: create each in the index with its ``_id``."""
        return _SPOOL_LINE_HEAD.sub(self._replayed_action, lines)


def one_line_each(taken: Taken) -> Taken:
    """``taken`` with every line one line ending in a newline (a sink fed by hand, not the handler)."""
    if all([line[-1:] == b"\n" for _, line in taken]):
        return taken
    return [(level, b" ".join(line.split(b"\n")).strip() + b"\n") for level, line in taken]


def exchange(client, body: bytes) -> dict:
    """Send ``body``; when some of it failed, send it again asking which (items' status and error)."""
    response = client.bulk(body=body, filter_path="errors")
    if response.get("errors"):
        response = client.bulk(body=body, filter_path="errors,items.*.status,items.*.error")
    return response


class Outcome(NamedTuple):
    shipped: int
    retry: list[Record]  # refused for now (429, 5xx): to the spool
    dead: list[tuple[Record, object]]  # refused for good (a 400 mapping error), with the reason


def classify(response: dict, count: int, records: Callable[[], list[Record]]) -> Outcome:
    """What became of the ``count`` records of a body. ``records()`` gives them in the body's
    order; it is called only when some failed (the common clean batch never builds them)."""
    if not response.get("errors"):
        return Outcome(count, [], [])
    retry: list[Record] = []
    dead: list[tuple[Record, object]] = []
    shipped = 0
    for record, item in zip(records(), response["items"]):
        result = item.get("create") or next(iter(item.values()))
        status = result.get("status", 500)
        if status < 300 or status == 409:
            shipped += 1
        elif status in RETRYABLE:
            retry.append(record)
        else:
            dead.append((record, result.get("error")))
    return Outcome(shipped, retry, dead)
