"""tests/slowness.py: the factor that scales the tests' deadlines with the machine."""

from __future__ import annotations

import pytest

from tests import slowness


def test_wf_test_slowness_sets_the_factor(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WF_TEST_SLOWNESS", "2.5")
    assert slowness.factor() == 2.5 and slowness.scaled(20) == 50
    monkeypatch.setenv("WF_TEST_SLOWNESS", "0.2")  # never shorter than written
    assert slowness.scaled(20) == 20
    monkeypatch.setenv("WF_TEST_SLOWNESS", "fast")
    with pytest.raises(SystemExit, match="WF_TEST_SLOWNESS='fast' is not a number"):
        slowness.factor()


def test_the_measured_factor_follows_the_load_and_stays_within_its_bounds(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WF_TEST_SLOWNESS", raising=False)
    monkeypatch.setattr(slowness, "_spawn_secs", lambda: 0.001)
    monkeypatch.setattr(slowness.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(slowness.os, "getloadavg", lambda: (7.0, 0.0, 0.0))
    assert slowness.measure() == 3.5  # 7 runnable on 2 cores
    monkeypatch.setattr(slowness.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert slowness.measure() == 1.0  # a quiet machine keeps the deadlines as written
    monkeypatch.setattr(slowness, "_spawn_secs", lambda: slowness.REFERENCE_SPAWN_SECS * 4)
    assert slowness.measure() == 4.0  # a slow start of a bare Python says so too
    monkeypatch.setattr(slowness.os, "getloadavg", lambda: (500.0, 0.0, 0.0))
    assert slowness.measure() == slowness.MAX_FACTOR
    assert 1.0 <= slowness.factor() <= slowness.MAX_FACTOR


def test_a_real_measurement_is_a_number_within_the_bounds():
    assert 1.0 <= slowness.measure() <= slowness.MAX_FACTOR
