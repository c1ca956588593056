"""Soak (#14): hostile input from many short connections, and nothing of it left behind.

20,000 malformed packets and text lines (the whole mix of :mod:`tests.hostile`: bad magic, bad
types, truncated headers, oversize lengths, random text lines, admin commands with huge
arguments, CAN_DO with many names, SET_CLIENT_ID garbage, SUBMIT_JOB_EPOCH out of range,
half-sent packets, replies never read, fuzzed packets) come from a child process over a few
thousand short connections, while a healthy client runs foreground jobs through our worker.
Done when:

- no healthy round trip takes over 100 ms, and none fails;
- once the hostile clients are gone, the server holds no socket but those it had before they
  came (its listening socket, its event loop's own, the healthy client's and worker's);
- its RSS is then within 50 MB of what it was before, plus what the jobs that ``status``
  counts account for (:data:`PER_JOB`).

``bench/server_soak.py`` runs the same at full size (500,000) and against gearmand.
"""

from __future__ import annotations

import pytest

from tests.hostile import (
    MIB,
    HealthyProbe,
    RssSampler,
    left_open,
    queued_jobs,
    rss_bytes,
    run_child,
    settle,
    socket_census,
)
from tests.peers import EmbeddedServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

INPUTS = 20_000
#: RSS the server may keep once the hostile clients are gone, beyond its start...
RSS_SLACK = 50 * MIB
#: ...plus this much per job ``status`` counts (a queued job costs about 0.9 KiB: bench/SERVER.md).
PER_JOB = 2048
#: The longest a healthy round trip may take.
MAX_ROUND_TRIP = 0.100
#: How long the server may take to close the hostile connections once their peers left.
SETTLE_TIMEOUT = 10.0


@pytest.fixture
def server():
    server = EmbeddedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_hostile_short_connections_leave_nothing_behind(server) -> None:
    pid = server.pid
    address = ("127.0.0.1", server.port)
    with HealthyProbe(server.address) as probe:
        baseline = socket_census(pid)
        start_rss = rss_bytes(pid)
        with RssSampler(pid) as rss:
            tally = run_child(
                ["soak", str(server.port), "--inputs", str(INPUTS), "--seed", "14"], timeout=60
            )
            census, settle_seconds = settle(pid, baseline, SETTLE_TIMEOUT)
        left = left_open(census, baseline)
    peak_rss = rss.peak
    assert server.running, f"the server died:\n{server.log_tail()}"
    end_rss = rss_bytes(pid)
    jobs = queued_jobs(address)
    allowed = start_rss + RSS_SLACK + jobs * PER_JOB

    report = (
        f"{tally['inputs']} inputs over {tally['connections']} connections in "
        f"{tally['seconds']} s ({tally['stuck']} sends the server did not take); "
        f"healthy: {probe.summary()}; RSS start {start_rss / MIB:.0f} MB, peak "
        f"{peak_rss / MIB:.0f} MB, end {end_rss / MIB:.0f} MB (allowed {allowed / MIB:.0f} MB "
        f"with {jobs} jobs counted by status); sockets left {left} after "
        f"{settle_seconds:.1f} s (now {dict(census)}, before {dict(baseline)})"
    )
    problems = []
    if probe.failures:
        problems.append(f"{len(probe.failures)} healthy round trips failed: {probe.failures[:3]}")
    if not probe.latencies or max(probe.latencies) > MAX_ROUND_TRIP:
        problems.append(f"a healthy round trip took over {MAX_ROUND_TRIP * 1000:.0f} ms")
    if left > 0:
        problems.append(f"{left} sockets still open {SETTLE_TIMEOUT:.0f} s after the peers left")
    if end_rss > allowed:
        problems.append(f"RSS {end_rss / MIB:.0f} MB > {allowed / MIB:.0f} MB allowed")
    assert not problems, "; ".join(problems) + "\n" + report
