"""Secrets never in any argv (either side), never in output, whichever key carries them. A scanner reads
every /proc/*/cmdline while real commands run — a checkout that clones over authenticated HTTP (git's own
http-backend behind a loopback server that demands the token), a task and a sweep."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Pod, TrainingRepo, checkout_config, wait_until, write_shards

USER = "wf"


class _GitHTTP(BaseHTTPRequestHandler):
    """Smart-HTTP git (git http-backend as CGI) that answers 401 without the right Basic credentials."""

    root: Path
    token: str
    refused = 0

    def log_message(self, *args: object) -> None:
        pass

    def _serve(self) -> None:
        expected = "Basic " + base64.b64encode(f"{USER}:{self.token}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            type(self).refused += 1
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": USER,
               "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
        out = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [ln.split(":", 1) for ln in head.decode().splitlines() if ":" in ln]
        status = next((v.strip() for k, v in headers if k.lower() == "status"), "200 OK")
        self.send_response(int(status.split()[0]))
        for k, v in headers:
            if k.lower() != "status":
                self.send_header(k, v.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _serve


@pytest.fixture
def http_repo(training_repo: TrainingRepo):
    token = f"tok-{uuid.uuid4().hex}"
    handler = type("Handler", (_GitHTTP,), {"root": training_repo.bare.parent, "token": token, "refused": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{training_repo.bare.name}", token, handler
    server.shutdown()


class CmdlineScanner:
    """Reads every process's argv in a loop; remembers any that holds one of the secrets."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = [s.encode() for s in secrets]
        self.hits: list[str] = []
        self.scans = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        argv = Path(f"/proc/{name}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if any(s in argv for s in self.secrets):
                        self.hits.append(argv.replace(b"\0", b" ").decode(errors="replace")[:200])
            self.scans += 1

    def __enter__(self) -> CmdlineScanner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_no_secret_in_argv_or_output_through_checkout_task_and_sweep(pod: Pod, training_repo: TrainingRepo,
                                                                     pod_python: str, http_repo):
    url, token, server = http_repo
    wandb = f"wandb-{uuid.uuid4().hex}"
    checkout_config(pod, training_repo, pod_python, HF_TOKEN=token, WANDB_API_KEY=wandb, TRAIN_SCRIPT="echo_train.py")
    pod.extra.pop("REPO_URL")
    with pod.write_config().open("a") as fh:  # a reference, expanded by wfops: the token travels inside REPO_URL
        fh.write(f'REPO_URL="{url.replace("http://", f"http://{USER}:${{HF_TOKEN}}@")}"\n')
    write_shards(pod.root / "data")
    outputs = []
    control = f"control-{uuid.uuid4().hex}"  # positive control: the scanner does see a secret in an argv
    with CmdlineScanner([token, wandb, control]) as scanner:
        probe = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)", control])
        wait_until(lambda: scanner.hits, what="the scanner to see the control process")
        probe.wait()
        for args in (("config.show",), ("checkout", "--dry-run"), ("checkout",), ("fsm.status",)):
            outputs.append(pod.ok(*args))
        outputs.append(pod.ok("task.run", "--id", "sees-it", "--cmd",
                              'test "$HF_TOKEN" = "$(printf %s "$HF_TOKEN")" && printf "%s" "${#WANDB_API_KEY}"'))
        outputs.append(pod.ok("task.wait", "--id", "sees-it"))
        csv = pod.root.parent / "s.csv"
        csv.write_text("run_id,config,seed,overrides,notes\nr1,config/train_tiny.py,1,,\n")
        outputs.append(pod.ok("sweep.start", "--csv", str(csv)))
        wait_until(lambda: '"state": "completed"' in (pod.outputs / "_control" / "sweep.json").read_text(),
                   timeout=90, what="the sweep to end")
    assert scanner.scans > 10 and scanner.hits and all(control in hit for hit in scanner.hits)
    assert server.refused >= 1  # the server demanded the token, and git got it (the checkout worked)
    assert (pod.root / "repo" / "examples").is_dir()
    for res in outputs:
        assert token not in res.out + res.err and wandb not in res.out + res.err
    assert "http://wf:********@127.0.0.1" in outputs[0].out and "********" in outputs[1].out
    assert token not in (pod.root / "repo" / ".git" / "config").read_text()  # the pod keeps the URL without it
    tail = pod.ok("task.status", "--id", "sees-it", "--json").json()["tail"]
    assert tail[-1].endswith(f" {len(wandb)}")  # the task saw the secret in its environment
