"""A fake Lium API on loopback, for driving the real `lium` CLI (`lium.io` 0.32) in tests.

It serves exactly what the CLI requests for `ps`, `rm`, `exec` and `up NODE` (read from the installed
package: `lium/sdk/client.py`, `lium/cli/up/*.py`, `lium/cli/rm/*.py`), keeps pods in memory, records
every request, and can script the failures a test needs:

- a pod PENDING for N polls of `GET /pods`, then RUNNING with an ssh command;
- a rent that succeeds and a pod that then fails to start (`lium up` names the billing pod);
- an API that refuses every call (401), fails (500), is down behind a gateway (502/503, an HTML body
  as a proxy sends it) or rate-limits (429 with Retry-After);
- one route that fails (`fail[(METHOD, PATH_PREFIX)] = STATUS`, e.g. a DELETE that answers 500);
- rents refused a few times (`rent_refusals = [503, 500]`: no capacity), and a rented pod's machine made by the
  test (`on_rent(pod)`: start a new loopback sshd and point the pod's ssh_host/ssh_port at it);
- a pod that fails (`pods[id].status = "FAILED"`) or vanishes (`pods.pop(id)`);
- a slow API (`delay_secs` before every answer, or `slow[(METHOD, PATH_PREFIX)] = SECS` for one route); the
  request has been carried out by then, as when a reply is lost on the way back;
- an API that checks the key (`api_key`): every request must carry it in `X-API-KEY`.

Point the CLI at it with `LIUM_BASE_URL=<fake.base_url>` (the CLI appends paths such as `/pods` to it).
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

API_PREFIX = "/api"
ADJ = ["swift", "brave", "calm", "eager", "gentle", "cosmic", "golden", "lunar", "zesty", "noble"]
NOUN = ["hawk", "lion", "eagle", "fox", "wolf", "shark", "raven", "matrix", "comet", "orbit"]
TEMPLATE_ID = "1948937e-5049-47ad-8e26-bcf1a4549d70"


def huid(pod_id: str) -> str:
    """The CLI's human id of a UUID (lium.sdk.utils.generate_huid)."""
    d = hashlib.md5(pod_id.encode()).hexdigest()
    return f"{ADJ[int(d[:4], 16) % 10]}-{NOUN[int(d[4:8], 16) % 10]}-{d[-2:]}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class FakePod:
    id: str
    name: str
    status: str
    ssh_host: str
    ssh_port: int
    ssh_user: str = "root"
    pending_polls: int = 0  # GET /pods answers PENDING this many more times, then RUNNING
    fail_after_polls: int | None = None  # then FAILED instead of RUNNING
    price: float = 2.5
    gpu_count: int = 1
    created_at: str = field(default_factory=now_iso)
    removal_scheduled_at: str | None = None
    volume_id: str | None = None  # the volume attached at its rent (`lium up --volume id:<HUID>`)

    @property
    def huid(self) -> str:
        return huid(self.id)

    def row(self, executor: dict) -> dict[str, Any]:
        ready = self.status == "RUNNING"
        return {
            "id": self.id,
            "pod_name": self.name,
            "status": self.status,
            "ssh_connect_cmd": f"ssh {self.ssh_user}@{self.ssh_host} -p {self.ssh_port}" if ready else None,
            "ports_mapping": {"22": self.ssh_port} if ready else {},
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "price": self.price,
            "gpu_count": self.gpu_count,
            "template": {"id": TEMPLATE_ID, "name": "Pytorch (Cuda)", "volumes": ["/root"]},
            "removal_scheduled_at": self.removal_scheduled_at,
            "local_volume_path": "/root",
            "executor": executor,
        }


class FakeLium:
    """The in-memory API. `start()` serves it on 127.0.0.1 at a free port; `stop()` shuts it down."""

    def __init__(self, ssh_host: str = "127.0.0.1", ssh_port: int = 22) -> None:
        self.ssh_host = ssh_host
        self.ssh_port = ssh_port
        self.pods: dict[str, FakePod] = {}
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[tuple[str, str, Any]] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        self.refuse_all: int | None = None  # answer every request with this HTTP status
        self.fail: dict[tuple[str, str], int] = {}  # (METHOD, path prefix) -> answer with this status
        self.delay_secs = 0.0  # wait this long before every answer (a slow API)
        self.slow: dict[tuple[str, str], float] = {}  # (METHOD, path prefix) -> answer this much later
        self.api_key: str | None = None  # when set, a request without this X-API-KEY gets 401
        self.keys_seen: list[str] = []  # the X-API-KEY of every request
        self.stopping = threading.Event()
        self.rent_then: str = "RUNNING"  # status a rented pod reaches: RUNNING or FAILED
        self.rent_refusals: list[int] = []  # the next rents answer these HTTP statuses, one each (no capacity)
        self.on_rent: Callable[[FakePod], None] | None = None  # a rented pod's "machine": e.g. a new sshd
        self.rent_pending_polls = 1
        self.ssh_keys: list[dict[str, Any]] = []
        self.volumes: list[dict[str, Any]] = []  # GET /volumes (add_volume): what `--volume id:<HUID>` resolves
        self.executor = {
            "id": "6f1c3a52-0b7e-4c1e-9a53-1d2f0c8e4b11",
            "executor_ip_address": ssh_host,
            "machine_name": "NVIDIA H100 80GB HBM3",
            "gpu_count": 1,
            "available_gpu_count": 1,
            "price_per_gpu": 2.5,
            "location": {"country_code": "US", "country": "US"},
            "specs": {"gpu": {"count": 1, "details": [{"name": "NVIDIA H100 80GB HBM3", "capacity": 81559}]},
                      "available_port_count": 10},
            "status": "available",
        }
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ test API

    @property
    def executor_huid(self) -> str:
        return huid(self.executor["id"])

    @property
    def base_url(self) -> str:
        assert self.server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self.server.server_address[1]}{API_PREFIX}"

    def add_pod(self, name: str, status: str = "RUNNING", pod_id: str | None = None, **kw: Any) -> FakePod:
        pod = FakePod(id=pod_id or str(uuid.uuid4()), name=name, status=status,
                      ssh_host=kw.pop("ssh_host", self.ssh_host), ssh_port=kw.pop("ssh_port", self.ssh_port), **kw)
        with self.lock:
            self.pods[pod.id] = pod
        return pod

    def add_volume(self, name: str) -> str:
        """A volume of the user's (`lium volumes new NAME`); returns its HUID, what `--volume id:` takes."""
        volume_id = str(uuid.uuid4())
        with self.lock:
            self.volumes.append({"id": volume_id, "name": name, "description": "", "created_at": now_iso()})
        return huid(volume_id)

    def volume_of(self, pod: FakePod) -> str | None:
        """The name of the volume attached to `pod` (None: none)."""
        return next((v["name"] for v in self.volumes if v["id"] == pod.volume_id), None)

    def count(self, method: str, path: str) -> int:
        """How many times `METHOD /path` (without the /api prefix and query) was requested."""
        with self.lock:
            return self.counts[(method, path)]

    def reset_counts(self) -> None:
        with self.lock:
            self.requests.clear()
            self.bodies.clear()
            self.counts.clear()

    def start(self) -> FakeLium:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        # a client that gave up on a slow answer closed its socket: not worth a traceback in the test log
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # releases requests held by delay_secs
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ------------------------------------------------------------------ the API

    def _pods_listing(self) -> list[dict[str, Any]]:
        rows = []
        for pod in list(self.pods.values()):
            if pod.status == "PENDING":
                if pod.pending_polls > 0:
                    pod.pending_polls -= 1
                elif pod.fail_after_polls is not None:
                    pod.status = "FAILED"
                else:
                    pod.status = "RUNNING"
            rows.append(pod.row(self.executor))
        return rows

    def handle(self, method: str, path: str, body: Any, api_key: str = "") -> tuple[int, Any]:
        with self.lock:
            self.requests.append((method, path))
            self.bodies.append((method, path, body))
            self.counts[(method, path)] += 1
            self.keys_seen.append(api_key)
            answer = self._answer(method, path, body, api_key)
            delay = self.delay_secs + sum(s for (m, prefix), s in self.slow.items()
                                          if m == method and path.startswith(prefix))
        if delay:
            self.stopping.wait(delay)
        return answer

    def _answer(self, method: str, path: str, body: Any, api_key: str) -> tuple[int, Any]:
        status = self.refuse_all
        if status is None:
            status = next((s for (m, prefix), s in self.fail.items() if m == method and path.startswith(prefix)), None)
        if status is not None:
            return status, _failure_body(status)
        if self.api_key is not None and api_key != self.api_key:
            return 401, {"detail": "Invalid API key"}
        return self._route(method, path, body)

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        ex_id = self.executor["id"]
        if (method, path) == ("GET", "/version"):
            return 200, {"version": "fake", "features": []}
        if (method, path) == ("GET", "/users/me"):
            return 200, {"id": "user-1", "email": "tester@example.invalid"}
        if (method, path) == ("GET", "/pods"):
            return 200, self._pods_listing()
        if method == "DELETE" and len(parts) == 2 and parts[0] == "pods":
            if self.pods.pop(parts[1], None) is None:
                return 404, {"detail": "Pod not found"}
            return 200, {"success": True}
        if method == "POST" and len(parts) == 3 and parts[0] == "pods" and parts[2] == "schedule-removal":
            pod = self.pods.get(parts[1])
            if pod is None:
                return 404, {"detail": "Pod not found"}
            pod.removal_scheduled_at = (body or {}).get("removal_scheduled_at") or now_iso()
            return 200, {"success": True, "removal_scheduled_at": pod.removal_scheduled_at}
        if (method, path) == ("GET", "/executors"):
            return 200, [self.executor]
        if (method, path) == ("GET", "/executors/default-docker-image"):
            return 200, [{"docker_image": "daturaai/pytorch", "docker_image_tag": "2.6.0-py3.11-cuda12.5.1"}]
        if (method, path) == ("GET", "/executors/deployment-estimate"):
            return 200, {"estimated_seconds": 5, "docker_image_size": 1_000_000_000, "is_slow_machine": False}
        if (method, path) == ("GET", "/templates"):
            return 200, [self._template()]
        if method == "GET" and len(parts) == 2 and parts[0] == "templates":
            return (200, self._template()) if parts[1] == TEMPLATE_ID else (404, {"detail": "Template not found"})
        if (method, path) == ("GET", "/volumes"):
            return 200, self.volumes
        if (method, path) == ("GET", "/ssh-keys"):
            return 200, self.ssh_keys
        if (method, path) == ("POST", "/ssh-keys"):
            key = {"id": str(uuid.uuid4()), "name": body.get("name"), "public_key": body.get("public_key"),
                   "created_at": now_iso()}
            self.ssh_keys.append(key)
            return 200, key
        if method == "POST" and parts == ["executors", ex_id, "rent"]:
            if self.rent_refusals:
                status = self.rent_refusals.pop(0)
                return status, _failure_body(status)
            pod = FakePod(id=str(uuid.uuid4()), name=body.get("pod_name") or self.executor_huid, status="PENDING",
                          ssh_host=self.ssh_host, ssh_port=self.ssh_port, pending_polls=self.rent_pending_polls,
                          fail_after_polls=0 if self.rent_then == "FAILED" else None,
                          volume_id=(body or {}).get("volume_id"))
            if self.on_rent is not None:
                self.on_rent(pod)
            self.pods[pod.id] = pod
            return 200, {"success": True, "pod_id": pod.id}
        return 404, {"detail": f"the fake Lium API has no {method} {path}"}

    def _template(self) -> dict[str, Any]:
        return {"id": TEMPLATE_ID, "name": "Pytorch (Cuda) 2.6", "docker_image": "daturaai/pytorch",
                "docker_image_tag": "2.6.0-py3.11-cuda12.5.1", "category": "PYTORCH", "status": "VERIFY_SUCCESS"}


def _failure_body(status: int) -> Any:
    """What a failing API sends: a gateway's HTML page for 502/503/504, JSON otherwise."""
    if status in (502, 503, 504):
        return f"<html><body><h1>{status} Service Unavailable</h1>nginx</body></html>"
    return {"detail": "refused by the test", "code": "TEST_REFUSAL"}


def _handler(fake: FakeLium) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
            pass

        def _serve(self) -> None:
            url = urlsplit(self.path)
            path = url.path
            if path.startswith(API_PREFIX):
                path = path[len(API_PREFIX):] or "/"
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            status, payload = fake.handle(self.command, path.rstrip("/") or "/", body,
                                          self.headers.get("X-API-KEY") or "")
            text = isinstance(payload, str)
            data = payload.encode() if text else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if text else "application/json")
                if status == 429:
                    self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up (a slow answer): nothing to tell it
                pass

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    return Handler
