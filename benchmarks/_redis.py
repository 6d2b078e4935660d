"""
A throwaway C{redis-server} on a free loopback port, for the benchmarks.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["LocalRedis"]


class LocalRedis:
    """
    C{redis-server} in a child process, without persistence, listening on
    127.0.0.1 only.  Each L{fresh} URL names another logical database, so
    every store size starts empty.

    @ivar url: The URL of database 0.
    """

    def __init__(self, work: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed: give --redis-url, or install it")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(work),
                "--databases", "16",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._next = 0

    def fresh(self) -> str:
        """
        The URL of a database not used yet.
        """
        self._next += 1
        return f"redis://127.0.0.1:{self.port}/{self._next % 16}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
