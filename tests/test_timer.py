"""``caffe.Timer`` (pycaffe's stopwatch): start/stop/ms, reading while running stops it, an
unused timer reads 0 with a warning."""

from __future__ import annotations

import logging
import time

import pytest

import caffe


def test_ms_is_the_last_start_to_stop_interval():
    t = caffe.Timer()
    t.start()
    time.sleep(0.02)
    t.stop()
    first = t.ms
    assert 15 <= first < 1000
    time.sleep(0.02)
    assert t.ms == first  # stopped: reading again changes nothing
    t.start()
    t.stop()
    assert t.ms < first
    assert t.seconds == pytest.approx(t.ms / 1e3)


def test_reading_a_running_timer_stops_it():
    t = caffe.Timer()
    t.start()
    t.start()  # no effect while running
    assert t.running
    elapsed = t.ms
    assert not t.running and t.ms == elapsed


def test_unused_timer_reads_zero_with_a_warning(caplog):
    logger = logging.getLogger("caffe")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="caffe"):
            assert caffe.Timer().ms == 0.0
    finally:
        logger.removeHandler(caplog.handler)
    assert "never been run" in caplog.text
