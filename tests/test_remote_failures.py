"""A remote that dies in the middle of a release's push (issue #12): the release fails within a
minute naming the remote and its URL, commits nothing, and the rerun completes the push.

The S3 server is moto's, behind a TCP relay of this test that forwards a fixed number of bytes
upstream and then goes silent (connections accepted, nothing answered: the worst case, a
server that hangs rather than refuses), which makes "mid-push" deterministic; reviving the
relay is the restart."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from helpers import S3_ENV, commit_all, copy_template, run, s3_bucket, tiny_conf

pytestmark = pytest.mark.slow


class Relay:
    """127.0.0.1:<port> -> upstream; after `budget` bytes sent upstream it goes silent until revived."""

    def __init__(self, upstream: int, budget: int):
        self.upstream, self.budget, self.dead = upstream, budget, False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def revive(self) -> None:
        self.budget, self.dead = None, False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.dead:
                continue  # accepted and never answered (kept open until the client gives up)
            up = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pipe, args=(client, up, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(up, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        try:
            while data := src.recv(65536):
                if upstream and self.budget is not None:
                    self.budget -= len(data)
                    self.dead = self.dead or self.budget <= 0
                if self.dead:
                    continue  # silent: swallow the request, answer nothing
                dst.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        self.server.close()


def test_a_remote_dying_mid_push_fails_in_bounded_time_and_the_rerun_completes(s3_server, tmp_path: Path):
    relay = Relay(int(s3_server.rsplit(":", 1)[1]), budget=60_000)
    try:
        root = copy_template(tmp_path / "project")
        tiny_conf(root)
        url = s3_bucket(s3_server, "cvrepro-dying")
        run(["dvc", "remote", "add", "-d", "storage", url], root)
        run(["dvc", "remote", "modify", "storage", "endpointurl", f"http://127.0.0.1:{relay.port}"], root)
        run(["cvrepro", "demo", "--images", "30", "--seed", "2"], root)
        run(["dvc", "add", "data/raw", "data/labels"], root)
        commit_all(root, "demo data on S3")
        run(["dvc", "repro", "split"], root)
        commit_all(root, "snapshot and split")
        head = run(["git", "rev-parse", "HEAD"], root).stdout

        started = time.monotonic()
        # The push is stopped after CVREPRO_PUSH_DEAD_AFTER s without an answer (30 by default): 8 here, the same
        # watchdog path in a quarter of the wait.
        res = run(["cvrepro", "release", "dataset"], root, check=False, env={**S3_ENV, "CVREPRO_PUSH_DEAD_AFTER": "8"})
        elapsed = time.monotonic() - started
        assert relay.dead, "the relay never reached its byte budget: the push was not interrupted"
        assert res.returncode == 2, res.stderr
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("error: dvc push to remote 'storage' (s3://cvrepro-dying at http://127.0.0.1:")
        assert "nothing was committed" in last and "Traceback" not in res.stderr
        assert elapsed < 120, elapsed  # push bounded to ~10-15 s here; the release's own checks on a loaded machine
        assert run(["git", "rev-parse", "HEAD"], root).stdout == head
        assert run(["git", "tag", "--list"], root).stdout == ""
        assert run(["git", "status", "--porcelain"], root).stdout == ""

        relay.revive()
        done = run(["cvrepro", "release", "dataset"], root, env=S3_ENV)
        assert "released DS-0.1.0" in done.stdout
        status = run(["dvc", "status", "-c"], root, env=S3_ENV).stdout
        assert "in sync" in status, status
    finally:
        relay.close()
