"""Read-only facts about the pod: the checkout probe (`checkout-facts`, planned by the client's
wfops.prepare), the pod report (`pod-facts`, pod.status), and the pod side of pod.down (`pod-down`, which
resets the workflow state).

Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess

from . import launch, procs, store, wire, workflow
from .data import FINEWEB_CHECK
from .registry import Refusal, command
from .states import EXIT_CONFLICT, INIT, SWEEP_RUNNING, UNKNOWN, VENV_DIR, pod_path
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, Iterable, List, Optional, Sequence, Tuple

    from .states import Layout
    from .wire import Json

# ------------------------------------------------------------------ checkout facts (one probe)

DEP_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "requirements.txt")
TORCH_PROBE = (
    "import json, sys\n"
    "import os\n"
    "info = {'python': sys.executable, 'version': sys.version.split()[0], 'is_venv': sys.prefix != sys.base_prefix,\n"
    "        'base_prefix': sys.base_prefix, 'exe_dir': os.path.dirname(os.path.realpath(sys.executable))}\n"
    "try:\n"
    "    import torch\n"
    "    info.update(importable=True, torch_version=torch.__version__.split('+')[0], torch_file=torch.__file__,\n"
    "                cuda=bool(torch.cuda.is_available()), cuda_devices=torch.cuda.device_count())\n"
    "except Exception as exc:\n"
    "    info.update(importable=False, error='%s: %s' % (type(exc).__name__, exc))\n"
    "import site\n"
    "info['site'] = [p for p in site.getsitepackages() if p.startswith(sys.prefix)] if info['is_venv'] else []\n"
    "print(json.dumps(info))\n"
)
INSTALLED_MARKER = ".wfops-installed"  # in the venv: the deps hash of the last successful install
ENV_PTH_MARKER = ".wfops-env-site"  # in the venv: the site dirs of REMOTE_PYTHON_BIN's own venv it was made to see


def run_out(argv: List[str], cwd: Optional[str] = None, timeout: Optional[float] = 120,
            strip: bool = True) -> Tuple[int, str]:
    """(exit code, stdout, stripped unless told); a missing program is exit 127, a timeout 124."""
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, text=True)
    except FileNotFoundError:
        return 127, ""
    except subprocess.TimeoutExpired:
        return 124, ""
    except OSError:
        return 126, ""
    return p.returncode, p.stdout.strip() if strip else p.stdout


def git_sha(repo: str) -> str:
    """HEAD of the repo at `repo`, or "unknown" (what sweep-start records in the manifest)."""
    code, out = run_out(["git", "-C", repo, "rev-parse", "HEAD"])
    return out if code == 0 and out else "unknown"


def deps_hash(repo: str, install_cmd: str) -> str:
    """What the venv's installed packages depend on: the install command and the repo's dependency files."""
    h = hashlib.sha256(install_cmd.encode())
    for name in DEP_FILES:
        path = os.path.join(repo, name)
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                h.update(name.encode() + b"\0" + fh.read())
    return h.hexdigest()


def shards(directory: str) -> Tuple[List[str], List[str]]:
    """(train shard names, val shard names) in `directory`, sorted; ([], []) when it cannot be listed."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return [], []
    train = [n for n in names if n.startswith("fineweb_train_") and n.endswith(".bin")]
    val = [n for n in names if n.startswith("fineweb_val_") and n.endswith(".bin")]
    return train, val


def venv_torch_dirs(venv: str) -> List[str]:
    """torch packages installed inside the venv itself (the image's torch must stay in charge)."""
    return sorted(glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "torch")))


def gpu_count(venv_python: str, env_cuda_visible: str) -> int:
    """GPUs a run may use: CUDA_VISIBLE_DEVICES when set, else `nvidia-smi -L`, else torch in the venv."""
    if env_cuda_visible:
        return len([d for d in env_cuda_visible.split(",") if d.strip()])
    code, out = run_out(["nvidia-smi", "-L"], timeout=60)
    count = len([ln for ln in out.splitlines() if ln.startswith("GPU")]) if code == 0 else 0
    if count > 0:
        return count
    code, out = run_out([venv_python, "-c", "import torch; print(torch.cuda.device_count())"], timeout=300)
    try:
        return max(0, int(out.splitlines()[-1])) if code == 0 and out else 0
    except ValueError:
        return 0


def pod_gpu_ids(env_visible: str, venv_python: str) -> List[str]:
    """The pod's own GPUs as the scheduler's slot ids: CUDA_VISIBLE_DEVICES of the pod env when set (its ids),
    else indices for gpu_count's GPUs."""
    if env_visible.strip():
        return [d.strip() for d in env_visible.split(",") if d.strip()]
    return [str(i) for i in range(gpu_count(venv_python, ""))]


def _repo_facts(repo: str, install_cmd: str) -> Json:
    r = {"path": repo, "exists": os.path.exists(repo)}
    r["is_git"] = os.path.isdir(os.path.join(repo, ".git"))
    r["empty"] = r["exists"] and os.path.isdir(repo) and not os.listdir(repo)
    if r["is_git"]:
        r["head"] = run_out(["git", "-C", repo, "rev-parse", "HEAD"])[1] or None
        r["branch"] = run_out(["git", "-C", repo, "symbolic-ref", "--short", "-q", "HEAD"])[1] or None
        r["origin"] = run_out(["git", "-C", repo, "remote", "get-url", "origin"])[1] or None
        code, out = run_out(["git", "-C", repo, "status", "--porcelain", "-z", "--untracked-files=no"], strip=False)
        r["dirty"] = [entry[3:] for entry in out.split("\0") if len(entry) > 3] if code == 0 else []
    r["deps_hash"] = deps_hash(repo, install_cmd) if r["is_git"] else None
    return r


def _venv_facts(venv: str) -> Json:
    cfg = {}
    try:
        with open(os.path.join(venv, "pyvenv.cfg"), encoding="utf-8") as fh:
            for line in fh:
                if "=" in line:
                    k, v = line.split("=", 1)
                    cfg[k.strip()] = v.strip()
    except (OSError, UnicodeDecodeError):
        pass
    return {
        "path": venv, "exists": os.path.isdir(venv),
        "python_ok": os.access(os.path.join(venv, "bin", "python"), os.X_OK),
        "system_site": cfg.get("include-system-site-packages", "").lower() == "true",
        "home": cfg.get("home"),
        "home_real": os.path.realpath(cfg["home"]) if cfg.get("home") else None,
        "torch_inside": venv_torch_dirs(venv),
        "installed_hash": store.read_text(os.path.join(venv, INSTALLED_MARKER)),
        "env_site": store.read_text(os.path.join(venv, ENV_PTH_MARKER)) or "",
    }


def _python_facts(python: str) -> Json:
    code, out = run_out([python, "-c", TORCH_PROBE], timeout=300)
    try:
        facts = json.loads(out.splitlines()[-1]) if code == 0 and out else {"found": False}
        if not isinstance(facts, dict):
            facts = {"found": False}
        facts.setdefault("found", True)
    except ValueError:
        facts = {"found": False}
    if not facts["found"]:
        facts["error"] = "exit %d running %s" % (code, python) if code != 127 else "%s not found" % python
    return facts


def remote_branch(url: str, branch: str) -> Json:
    """Whether origin has `branch`, and its default branch (`git ls-remote`, read-only); unchecked when origin
    does not answer (the fetch then says why)."""
    from .steps import git_credentials

    if not url or not branch:
        return {"checked": False}
    bare_url, env, cfg = git_credentials(url)
    env = dict(env or os.environ, GIT_TERMINAL_PROMPT="0")
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    try:
        p = subprocess.run(["git"] + cfg + ["ls-remote", "--symref", bare_url, "HEAD", "refs/heads/*"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"checked": False, "error": str(exc)}
    if p.returncode != 0:
        return {"checked": False, "error": p.stderr.strip()[-300:]}
    default, head, heads = "", "", {}
    for line in p.stdout.splitlines():
        ref, _, name = line.partition("\t")
        if ref.startswith("ref: refs/heads/") and name == "HEAD":
            default = ref[len("ref: refs/heads/"):]
        elif name == "HEAD":
            head = ref
        elif name.startswith("refs/heads/"):
            heads[name[len("refs/heads/"):]] = ref
    if not default:  # a HEAD that is no symref: the branch at its commit
        default = next((b for b, sha in sorted(heads.items()) if sha == head), "")
    return {"checked": True, "has_branch": branch in heads, "default": default, "branches": sorted(heads)[:10]}


@command(wire.CHECKOUT_FACTS)
def checkout_facts(pod: Layout, repo: str, python: str, data_dir: str, workdir: str, link_dir: str, mounts: str,
                   install_cmd: str, data_check: Sequence[Any] = FINEWEB_CHECK, data_link: str = "shards",
                   repo_url: str = "", branch: str = "") -> Json:
    """One probe of everything `checkout` plans from (read-only)."""
    from . import data

    repo, data_dir, mounts = pod_path(repo), pod_path(data_dir), pod_path(mounts)
    venv = os.path.join(repo, VENV_DIR)
    facts: Json = {"repo": _repo_facts(repo, install_cmd), "venv": _venv_facts(venv), "python": _python_facts(python)}
    code, out = run_out(["nvidia-smi", "-L"], timeout=60)
    facts["gpus"] = [ln for ln in out.splitlines() if ln.startswith("GPU")] if code == 0 else []
    train, val = shards(data_dir)
    disk = pf_disk(data_dir, pf_mounts(mounts))
    checks = data.matches(data_dir, data_check)
    facts["data"] = {"dir": data_dir, "exists": os.path.isdir(data_dir), "train": train, "val": val,
                     "checks": checks, "mount_point": disk["mount_point"], "fs_type": disk["fs_type"]}
    facts["link"] = data.link_facts(data_dir, os.path.join(repo, workdir, link_dir), data_link, checks)
    facts["remote"] = remote_branch(repo_url, branch)
    return facts


# ------------------------------------------------------------------ pod facts (pod.status)
# and the pod side of pod.down. Read-only except `pod-down`, which resets the workflow state.

def pf_unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def pf_mounts(table: str = "/proc/self/mountinfo") -> List[Tuple[str, str, str]]:
    """[(mount point, fs type, source)] in mount order (a later mount on the same point hides earlier ones),
    from a mountinfo table or a mounts/fstab-format one (WF_MOUNT_TABLE)."""
    out = []
    try:
        with open(table, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if "-" in parts[6:]:  # mountinfo: ... mount-point ... - fstype source ...
                    sep = parts.index("-", 6)
                    if len(parts) >= sep + 3:
                        out.append((pf_unescape(parts[4]), parts[sep + 1], pf_unescape(parts[sep + 2])))
                elif len(parts) >= 3 and not parts[0].startswith("#"):  # mounts: source mount-point fstype ...
                    out.append((pf_unescape(parts[1]), parts[2], pf_unescape(parts[0])))
    except OSError:
        pass
    return out


def deepest_mount(path: str, mounts: Iterable[Tuple[str, str, str]]) -> Tuple[str, str, str]:
    """(mount point, fs type, source) of the deepest mount holding the absolute, resolved `path`."""
    best = ("", "", "")
    for mp, fs, src in mounts:
        if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best[0]):
            best = (mp, fs, src)
    return best


def pf_disk(path: str, mounts: Iterable[Tuple[str, str, str]]) -> Json:
    """The disk holding `path` or, when it does not exist yet, its nearest existing parent."""
    wanted = os.path.abspath(path)
    probe = wanted
    while not os.path.exists(probe) and probe != os.path.dirname(probe):
        probe = os.path.dirname(probe)
    real = os.path.realpath(probe)
    point, fstype, source = deepest_mount(real, mounts)
    out = {"path": path, "exists": probe == wanted, "existing": probe, "mount_point": point, "fs_type": fstype,
           "source": source, "is_mount": bool(point) and real == point}
    try:
        st = os.statvfs(probe)
        out.update(free_bytes=st.f_bavail * st.f_frsize, total_bytes=st.f_blocks * st.f_frsize)
    except OSError as exc:
        out.update(free_bytes=None, total_bytes=None, error=str(exc))
    return out


def pf_gpus() -> Json:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"gpus": [], "gpu_error": "nvidia-smi not found"}
    try:
        p = subprocess.run([smi, "-L"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=30, text=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"gpus": [], "gpu_error": "nvidia-smi -L: %s" % exc}
    gpus = [ln.strip() for ln in p.stdout.splitlines() if ln.startswith("GPU ")]
    error = None if p.returncode == 0 else "nvidia-smi -L exited %d: %s" % (p.returncode, p.stdout.strip()[-200:])
    return {"gpus": gpus, "gpu_error": error}


def _user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid with no passwd entry (some container images)
        return str(os.geteuid())


@command(wire.POD_FACTS)
def pod_facts(pod: Layout, repo: str, mnt: str = "/mnt") -> Json:
    """pod.status: who and where, the disks of /mnt and the repo, the GPUs, the workflow state. Never fails
    on a damaged state file: it is reported instead."""
    import socket

    mounts = pf_mounts()
    facts = {"user": _user(), "host": socket.gethostname(), "boot_id": procs.boot_id(),
             "mnt": pf_disk(pod_path(mnt), mounts), "repo": pf_disk(pod_path(repo), mounts)}
    try:
        facts["state"] = workflow.read_state(pod.state_file)["state"]
    except store.Damaged as exc:
        facts.update(state=UNKNOWN, state_problem=str(exc))
    facts.update(pf_gpus())
    return facts


@command(wire.POD_DOWN)
def pod_down(pod: Layout, session: str, force: bool = False, reason: str = "pod removed (pod.down)") -> Json:
    """Refuse while a sweep runs (unless force); otherwise reset the workflow state to INIT (it may live on a
    /mnt volume that outlives the pod). A damaged state file is kept aside by the reset."""
    try:
        before = workflow.read_state(pod.state_file)["state"]
    except store.Damaged:
        before = UNKNOWN
    why = []
    if before == SWEEP_RUNNING:
        why.append("workflow state SWEEP_RUNNING")
    if launch.tmux_has_session(pod, session):
        why.append("tmux session %s is alive" % session)
    if why and not force:
        raise Refusal(EXIT_CONFLICT, "a sweep is still running on the pod ({}); nothing was removed. pod.down "
                      "--force removes the pod anyway (the sweep dies with it)".format(", ".join(why)))
    kept = workflow.force(pod, INIT, "pod.down", reason).get("kept")
    out = {"state_before": before, "state": INIT, "sweep_running": bool(why), "why": why, "file": pod.state_file}
    if kept:
        out["kept"] = kept  # where the damaged state file went
    return out
