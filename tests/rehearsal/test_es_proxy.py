"""The loopback proxy that makes Elasticsearch answer 429 (tests/harness/es_proxy.py)."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.harness.es_proxy import EsProxy


def bulk(url: str, ids: list[str], index: str) -> tuple[int, dict]:
    body = "".join(json.dumps({"create": {"_index": index, "_id": i}}) + "\n" + json.dumps({"n": i}) + "\n"
                   for i in ids).encode()
    request = urllib.request.Request(f"{url}/_bulk?filter_path=errors,items.*.status", data=body,
                                     headers={"Content-Type": "application/x-ndjson"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def count(url: str, index: str) -> int:
    urllib.request.urlopen(urllib.request.Request(f"{url}/{index}/_refresh", method="POST"), timeout=30).close()
    with urllib.request.urlopen(f"{url}/{index}/_count", timeout=30) as response:
        return json.load(response)["count"]


@pytest.fixture
def proxy(elasticsearch):
    proxy = EsProxy(elasticsearch.url).start()
    yield proxy
    proxy.stop()


def test_partial_mode_refuses_every_other_item_and_forwards_the_rest(proxy, elasticsearch):
    proxy.set_mode("partial")
    status, answer = bulk(proxy.url, ["a", "b", "c", "d"], "proxy-partial")
    assert status == 200 and answer["errors"] is True
    assert [next(iter(item.values()))["status"] for item in answer["items"]] == [201, 429, 201, 429]
    assert count(elasticsearch.url, "proxy-partial") == 2 and proxy.counts["rejected_items"] == 2
    proxy.set_mode("pass")  # the retry of the refused ones, as the shipper sends it: 409 for the others
    status, answer = bulk(proxy.url, ["a", "b", "c", "d"], "proxy-partial")
    assert [next(iter(item.values()))["status"] for item in answer["items"]] == [409, 201, 409, 201]
    assert count(elasticsearch.url, "proxy-partial") == 4


def test_reject_mode_answers_429_to_whole_requests_and_other_calls_pass(proxy, elasticsearch):
    proxy.set_mode("reject")
    status, answer = bulk(proxy.url, ["x"], "proxy-reject")
    assert status == 429 and answer["error"]["type"] == "es_rejected_execution_exception"
    with urllib.request.urlopen(f"{proxy.url}/_cluster/health", timeout=30) as response:
        assert json.load(response)["status"] in ("green", "yellow")
    with pytest.raises(ValueError, match="unknown proxy mode"):
        proxy.set_mode("slow")
