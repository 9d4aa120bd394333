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


def test_the_bot_survives_five_minutes_of_faults_and_loses_nothing(tmp_path):
    try:
        result = rehearse(tmp_path / "work", MINUTES * 60, warmup=30.0)
    except ServiceUnavailable as exc:
        skip_or_fail(f"rehearsal services unavailable: {exc}")
    json_path, md_path = report.write(result, tmp_path / "results")
    played = {fault["fault"] for fault in result["faults"]}
    assert played == {name for _, name, _ in SCHEDULE}
    missed = [v for v in result["verdicts"] if not v["ok"]]
    assert not missed, f"{md_path.read_text()}\n(details: {json_path})"
