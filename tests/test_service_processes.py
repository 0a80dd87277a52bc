"""The service as real uvicorn processes (`recsys-llm serve`): two processes on one run share the live catalogue
and interactions through the change log, and a SIGKILLed service loses nothing it acknowledged."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="pip install -e '.[dev]' for the service tests")
pytest.importorskip("uvicorn", reason="pip install -e '.[serve]' for the service")
from fastapi.testclient import TestClient  # noqa: E402

from recsys_llm.serve.app import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``recsys-llm serve`` in a child process, waited for until /ready answers 200."""

    def __init__(self, run: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
        self.out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from recsys_llm.cli import main; sys.exit(main(sys.argv[1:]))",
             "serve", "--run-dir", str(run), "--port", str(self.port)],
            env=env, stdout=self.out, stderr=subprocess.STDOUT)
        self.log = log

    def ready(self) -> Served:
        log = self.log
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"service not ready in 90 s: {log.read_text()[-2000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.out.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.out.close()


def _item(n: int) -> dict:
    return {"item_id": f"live-{n}", "title": f"Live item {n} space", "genres": "space rocket astronaut",
            "description": f"a space film number {n}"}


def _add_until_stopped(url: str, acked: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        n = 0
        while not stop.is_set():
            try:
                r = c.post("/items", json={"items": [_item(n), _item(n + 1)]})
            except httpx.TransportError:
                return  # the service was killed mid-request: that add was never acknowledged
            if r.status_code == 200:
                acked.extend(r.json()["added"])
            n += 2


def test_two_processes_share_changes_and_sigkill_loses_nothing_acknowledged(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    a, b = Served(run, tmp_path / "a.log"), Served(run, tmp_path / "b.log")  # both start at once
    try:
        a.ready(), b.ready()
        # an item added through A is served by B at once, and B's interactions reach A
        assert httpx.post(a.url + "/items", json={"items": [_item(-2)]}).status_code == 200
        sim = httpx.get(b.url + "/items/live--2/similar", params={"k": 3})
        assert sim.status_code == 200, sim.text
        recs = httpx.post(b.url + "/recommend", json={"user_id": "u0", "k": 3, "rerank": False,
                                                      "filters": {"title": "Live item -2"}}).json()
        assert [it["item_id"] for it in recs["items"]] == ["live--2"]
        events = [{"user_id": "walk-in", "item_id": "live--2"}, {"user_id": "u3", "item_id": "live--2"}]
        assert httpx.post(b.url + "/interactions", json={"events": events}).json()["new_users"] == 1
        hist = httpx.get(a.url + "/users/walk-in").json()["history"]
        assert [h["item_id"] for h in hist] == ["live--2"]
        # adds to A while it is SIGKILLed: every acknowledged one survives the restart
        acked: list[str] = ["live--2"]
        stop = threading.Event()
        writer = threading.Thread(target=_add_until_stopped, args=(a.url, acked, stop))
        writer.start()
        deadline = time.time() + 30
        while len(acked) < 7 and time.time() < deadline:
            time.sleep(0.01)
        a.kill()
        stop.set()
        writer.join(30)
        b.kill()
    finally:
        a.stop()
        b.stop()
    assert len(acked) >= 7
    # restart: the run's state is replayed from the change log (in this process: a third server start would
    # only add the import time of a fresh interpreter)
    with TestClient(create_app(run, warm=False)) as c:
        health = c.get("/health").json()
        assert health["live_items"] >= 30 + len(acked) and not health["change_log"]["skipped"]
        for item_id in acked:
            assert c.get(f"/items/{item_id}/similar", params={"k": 1}).status_code == 200, item_id
        assert [h["item_id"] for h in c.get("/users/walk-in").json()["history"]] == ["live--2"]
        assert "live--2" in [h["item_id"] for h in c.get("/users/u3").json()["history"]]
