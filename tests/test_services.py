# -*- test-case-name: tests.test_services -*-
"""
Tests for L{tests.services.freePort}: under pytest-xdist, workers running
side by side never get the same port, nor one the kernel may hand out as
an ephemeral port meanwhile.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from tests import services
from tests.services import freePort


def _ephemeralRange() -> range:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(word) for word in f.read().split())
    return range(low, high + 1)


class FreePortTests(SynchronousTestCase):
    def setUp(self) -> None:
        # This process's record of the ports it handed out, as if fresh
        # (and the real record untouched).
        self.patch(services, "_handedOut", set())

    def asWorker(self, worker: str, count: int) -> None:
        self.patch(services.os, "environ", dict(
            services.os.environ, PYTEST_XDIST_WORKER=worker, PYTEST_XDIST_WORKER_COUNT=str(count)
        ))

    def assertBindable(self, port: int) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))

    def test_alone(self) -> None:
        """
        Outside xdist the kernel picks the port, and nothing listens on it.
        """
        self.patch(services.os, "environ", {k: v for k, v in services.os.environ.items() if "XDIST" not in k})
        port = freePort()
        self.assertBindable(port)

    def test_workersDisjoint(self) -> None:
        """
        Each worker draws from a range of its own, outside the kernel's
        ephemeral range, and never hands out a port twice.
        """
        drawn: dict[str, set[int]] = {}
        for worker in ("gw0", "gw1", "gw2", "gw3"):
            self.asWorker(worker, 4)
            ports = [freePort() for _ in range(50)]
            self.assertEqual(len(set(ports)), 50)
            drawn[worker] = set(ports)
        everything = set().union(*drawn.values())
        self.assertEqual(len(everything), 200)
        ephemeral = _ephemeralRange()
        self.assertEqual([p for p in everything if p in ephemeral], [])
        for port in everything:
            self.assertBindable(port)

    def test_skipsBusyPorts(self) -> None:
        """
        A port something listens on is not handed out.
        """
        self.asWorker("gw999", 1000)
        size = (services._WORKER_PORTS.stop - services._WORKER_PORTS.start) // 1000
        listeners = []
        try:
            first = services._WORKER_PORTS.start + 999 * size
            for port in range(first, first + size - 1):
                s = socket.socket()
                listeners.append(s)
                try:
                    s.bind(("127.0.0.1", port))
                    s.listen(1)
                except OSError:
                    pass
            # One port of the range is left.
            last = first + size - 1
            self.assertEqual(freePort(), last)
            self.assertRaises(RuntimeError, freePort)
        finally:
            for s in listeners:
                s.close()
