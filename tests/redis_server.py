"""A real ``redis-server`` (the distribution's package) on a free local port, for the farm tests.

No persistence (``--save '' --appendonly no``), its files in a temporary folder, stopped (and waited for)
afterwards. When ``redis-server`` is missing the test fails in CI (``.ci/run`` installs it) and is skipped
elsewhere with the install command.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

START_TIMEOUT_S = 10.0


@dataclass
class RedisServer:
    port: int
    password: str | None
    process: subprocess.Popen[bytes] | None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def start_redis(folder: Path, *, password: str | None = None, port: int | None = None) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed (Debian: apt-get install -y redis-server; .ci/run does it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = port or _free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(folder), "--logfile", str(folder / "redis.log")]
    if password:
        args += ["--requirepass", password]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(port, password, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"redis-server did not start on port {port}: {(folder / 'redis.log').read_text()}")
        time.sleep(0.05)
    return server


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server with a password (so redaction is tested on every farm run)."""
    server = start_redis(tmp_path_factory.mktemp("redis"), password="s3cret-broker-pw")
    yield server
    server.stop()
