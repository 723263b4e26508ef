"""The serial round-trip benchmark: a short run writes a report whose figures hang together."""

import json

import pytest

from conftest import run_module


def test_serial_rtt_reports_round_trips_no_shorter_than_the_wire(tmp_path):
    out = tmp_path / "rtt.json"
    proc = run_module("benchmarks", "serial_rtt", "--actions", "30", "--bauds", "1000000", "--lines", "uart",
                      "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "p99 ms" in proc.stdout and "1000000 uart" in proc.stdout
    report = json.loads(out.read_text())
    assert report["command"].startswith("python -m benchmarks serial_rtt") and "cpu" in report["machine"]
    (row,) = report["results"]
    assert row["acked"] + row["lost"] == 30 and row["acked"] > 0
    assert row["wire_ms"] == pytest.approx((17 + 35) * 10 / 1_000_000 * 1000, rel=0.2)
    # The emulator sleeps the wire time of every frame and reply: no round trip can be shorter.
    assert row["wire_ms"] <= row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]


def test_serial_rtt_refuses_bad_baud_rates():
    proc = run_module("benchmarks", "serial_rtt", "--bauds", "fast")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --bauds takes comma-separated integers")
