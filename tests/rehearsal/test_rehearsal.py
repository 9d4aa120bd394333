"""The production rehearsal, 5 minutes: the installed wheel as the bot against the harness's
real services, under load, while every fault of the schedule plays once (issue 18)."""
from __future__ import annotations

import os

import pytest

from tests.harness.base import ServiceUnavailable, skip_or_fail

from . import report
from .faults import SCHEDULE
from .run import rehearse

pytestmark = [pytest.mark.slow, pytest.mark.services]
MINUTES = float(os.environ.get("REHEARSAL_MINUTES", "5"))
# The goal is no stall over 100 ms, and the report judges against it. On the shared 2-core CI
# machine, with other test runs beside it, a wake-up 100-150 ms late happens by noise a few
# times in 5 minutes; the test fails only past this bound, so a real stall (a blocking call on
# the loop: seconds) still fails it. The report shows both.
SHARED_MACHINE_WORST_STALL = 0.5  # seconds
SHARED_MACHINE_STALLS = 5


def test_the_bot_survives_five_minutes_of_faults_and_loses_nothing(tmp_path):
    try:
        result = rehearse(tmp_path / "work", MINUTES * 60)
    except ServiceUnavailable as exc:
        skip_or_fail(f"rehearsal services unavailable: {exc}")
    json_path, md_path = report.write(result, tmp_path / "results")
    assert {fault["fault"] for fault in result["faults"]} == {name for _, name, _ in SCHEDULE}
    missed = [v for v in result["verdicts"] if not v["ok"] and not v["timing"]]
    assert not missed, f"{md_path.read_text()}\n(details: {json_path})"
    resources = result["figures"]["resources"]
    assert resources["worst_stall_s"] <= SHARED_MACHINE_WORST_STALL, md_path.read_text()
    assert resources["stall_count"] <= SHARED_MACHINE_STALLS, md_path.read_text()
