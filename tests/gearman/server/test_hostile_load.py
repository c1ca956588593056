"""Load (#14): three hostile floods at once, while a healthy client keeps its round trips short.

For :data:`DURATION` seconds a child process (:func:`tests.hostile.run_load`, at lower
priority than the healthy client) runs, at once:

- one client that sends ``status`` lines over :data:`FUNCTIONS` functions as fast as the server
  takes them, and never reads;
- one client that pipelines SUBMIT_JOB_EPOCH with epochs outside the signed 64-bit range
  (``2**63``, ``10**400``...), which gearmand refuses (it closes the connection);
- :data:`HOLDERS` connections that each send a header announcing a 1 MiB packet and all of its
  body but the last byte, and hold.

Meanwhile our client runs foreground jobs through our worker, one every 5 ms. Done when:

- no healthy round trip fails, and their p99 stays under 50 ms;
- the server's RSS stays under :data:`RSS_BOUND` (300 MB, our proposed bound), sampled every
  50 ms: so the half-sent packets (1 GiB if all were buffered) are cut off by the server's
  buffered-bytes budget: it closes the connections over it, and those it keeps hold less than
  the bound;
- no out-of-range epoch gets a JOB_CREATED, and the server holds no job for one;
- the server still answers, and once the floods stopped it holds no socket but those it had
  before.
"""

from __future__ import annotations

import pytest

from tests.hostile import (
    JOB_CREATED,
    MIB,
    HealthyProbe,
    RssSampler,
    admin_lines,
    create_functions,
    left_open,
    rss_bytes,
    run_child,
    settle,
    socket_census,
)
from tests.peers import EmbeddedServer, admin_command

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

DURATION = 8.0
FUNCTIONS = 20_000
HOLDERS = 1_000
HOLDER_SIZE = MIB
#: The most RSS the server may reach under this load (our proposal for the docs).
RSS_BOUND = 300 * MIB
#: The healthy client's p99 round trip must stay under this.
P99_BOUND = 0.050
#: Round trips needed for the p99 to mean something (one every 5 ms for 8 s is about 1,500).
MIN_ROUND_TRIPS = 300


@pytest.fixture
def server():
    server = EmbeddedServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_floods_leave_the_healthy_client_served_and_memory_bounded(server) -> None:
    pid = server.pid
    address = ("127.0.0.1", server.port)
    create_functions(address, FUNCTIONS)
    with HealthyProbe(server.address) as probe:
        baseline = socket_census(pid)
        start_rss = rss_bytes(pid)
        with RssSampler(pid) as rss:
            floods = run_child(
                [
                    "load",
                    str(server.port),
                    "--duration",
                    str(DURATION),
                    "--holders",
                    str(HOLDERS),
                    "--holder-size",
                    str(HOLDER_SIZE),
                ],
                timeout=DURATION + 60,
            )
        probe.stop()
        assert server.running, f"the server died:\n{server.log_tail()}"
        census, settle_seconds = settle(pid, baseline, 10.0)
        left = left_open(census, baseline)
    try:  # a server stuck on its backlog says so here, rather than hanging the test
        answers = admin_command(server.address, "version", timeout=5)
        jobs = admin_lines(address, b"show jobs", timeout=5)
    except OSError as error:
        answers, jobs = repr(error).encode(), None

    holders, epoch = floods["holders"], floods["epoch"]
    held = "?" if jobs is None else len(jobs)
    created = epoch["replies"].get(str(JOB_CREATED), 0)
    report = (
        f"healthy: {probe.summary()}; RSS start {start_rss / MIB:.0f} MB, peak "
        f"{rss.peak / MIB:.0f} MB; holders {holders}; epoch flood {epoch}; status flood "
        f"{floods['status']}; jobs held {held}; sockets left {left} after "
        f"{settle_seconds:.1f} s (now {dict(census)}, before {dict(baseline)})"
    )
    problems = []
    if probe.failures:
        problems.append(f"{len(probe.failures)} healthy round trips failed: {probe.failures[:3]}")
    if len(probe.latencies) < MIN_ROUND_TRIPS:
        problems.append(f"only {len(probe.latencies)} healthy round trips completed")
    if probe.percentile(0.99) >= P99_BOUND:
        problems.append(f"healthy p99 {probe.percentile(0.99) * 1000:.1f} ms >= 50 ms")
    if rss.peak >= RSS_BOUND:
        problems.append(f"peak RSS {rss.peak / MIB:.0f} MB >= {RSS_BOUND / MIB:.0f} MB")
    kept = holders["opened"] - holders["closed_by_server"]
    if holders["closed_by_server"] == 0 or kept * HOLDER_SIZE >= RSS_BOUND:
        problems.append(
            f"the server cut off {holders['closed_by_server']} of {holders['opened']} "
            f"half-sent 1 MiB packets (kept {kept}: {kept * HOLDER_SIZE / MIB:.0f} MB)"
        )
    if created:
        problems.append(f"{created} out-of-range epochs got a JOB_CREATED")
    if jobs:
        problems.append(f"the server holds {len(jobs)} jobs after the floods")
    if not answers.startswith(b"OK"):
        problems.append(f"version answered {answers!r}")
    if left > 0:
        problems.append(f"{left} sockets still open 10 s after the floods stopped")
    assert not problems, "; ".join(problems) + "\n" + report
