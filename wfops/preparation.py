"""Pod preparation, planned in pure Python from one probe of the pod ("facts").

`plan_checkout(settings, facts)` decides what `checkout` must do and refuses, before anything on the
pod changes, whatever the probe already shows to be wrong (an occupied repo path, tracked
modifications, missing or CPU-only torch, missing data without a download). The apply script then
does only the steps marked to do, in the order of SPEC §2, and stops at the first failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from wfops.errors import ConfigError, RemoteError
from wfops.settings.checks import leaves
from wfops.settings.load import Settings

TORCH_MIN = (2, 3)
FINEWEB_PAIR = ("fineweb_train_*.bin", "fineweb_val_*.bin")  # the default DATA_CHECK

Facts = dict[str, Any]  # the pod's answer to `checkout-facts` (wfops/agent/facts.py), or one part of it


@dataclass(frozen=True)
class Step:
    name: str
    do: bool
    detail: str
    check: bool = False  # a check that always runs (shown as "check", not "do"/"skip")

    @property
    def action(self) -> str:
        return "check" if self.check else ("do" if self.do else "skip")


@dataclass(frozen=True)
class CheckoutPlan:
    clone: bool
    force_clean: bool
    ref_kind: str  # "branch" | "pr"
    ref: str  # branch name or PR number
    expect_sha: str
    venv: str  # "keep" | "create" | "recreate"
    data: str  # "present" | "download" | "download_staged" | "prepare"
    steps: tuple[Step, ...] = field(default=())
    env_site: tuple[str, ...] = ()  # REMOTE_PYTHON_BIN is in a venv: its site dirs, which our venv must see too

    def render(self) -> str:
        width = max(len(s.name) for s in self.steps)
        return "\n".join(f"  {s.action.ljust(5)}  {s.name.ljust(width)}  {s.detail}" for s in self.steps)

    def does(self, name: str) -> bool:
        return any(s.name == name and s.do for s in self.steps)


def require_repo_url(settings: Settings) -> str:
    url = settings.repo_url
    if not url:
        raise ConfigError("config: REPO_URL is empty; checkout needs the git URL of your training repo")
    if url.startswith("-") or "\n" in url:
        raise ConfigError(f"config: REPO_URL={settings.mask(url)!r} is not a git URL")
    return url


def check_data_keys(settings: Settings) -> None:
    """DATA_PREPARE_CMD needs a DATA_CHECK (how checkout tells that the data is there, so that it runs only when
    needed) and is one way to get the data, DOWNLOAD_FINEWEB the other."""
    if not settings.data_prepare_cmd.strip():
        return
    if not settings.data_check:
        raise ConfigError("config: DATA_PREPARE_CMD needs DATA_CHECK (the files it makes in DATA_DIR), so that "
                          "checkout runs it only while they are missing")
    if settings.download_fineweb:
        raise ConfigError("config: DATA_PREPARE_CMD and DOWNLOAD_FINEWEB=1 are two ways to get the data; keep one")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def _short_list(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _same_url(a: str, b: str) -> bool:
    """Same repository: a trailing `/` or `.git` and credentials in an http(s) URL do not count (the pod keeps
    the URL without them)."""
    def norm(u: str) -> str:
        u = re.sub(r"^(https?://)[^/@]*@", r"\1", u.strip()).rstrip("/")
        return u[:-4] if u.endswith(".git") else u

    return norm(a) == norm(b)


def check_torch(settings: Settings, py: Facts) -> str:
    """Refuse a pod whose REMOTE_PYTHON_BIN has no usable torch; return a one-line description."""
    bin_ = settings.remote_python_bin
    if not py.get("found"):
        raise RemoteError(f"REMOTE_PYTHON_BIN={bin_}: {py.get('error', 'not found')} on the pod; "
                          "set it to the python of the image's torch")
    if not py.get("importable"):
        hint = ""
        if py.get("is_venv"):
            hint = (f" ({py.get('python')} is itself a virtualenv over {py.get('base_prefix')}; the checkout's venv "
                    "would see its packages, but torch is not among them)")
        raise RemoteError(f"torch does not import with REMOTE_PYTHON_BIN={bin_} ({py.get('error')}){hint}; "
                          "the pod image must provide torch: install it into that python or point "
                          "REMOTE_PYTHON_BIN at the one that has it")
    version = str(py.get("torch_version"))
    if _version_tuple(version) < TORCH_MIN:
        raise RemoteError(f"torch {version} at {py.get('torch_file')} is older than "
                          f"{'.'.join(map(str, TORCH_MIN))}; use a newer pod image or REMOTE_PYTHON_BIN")
    where = f"torch {version} from {py.get('torch_file')}"
    if py.get("is_venv") and not py.get("site"):
        raise RemoteError(f"REMOTE_PYTHON_BIN={bin_} is a virtualenv whose site-packages cannot be found, so the "
                          "checkout's venv could not see its packages; point REMOTE_PYTHON_BIN at the python that "
                          "has torch outside a venv (the image's, or a conda env's)")
    if py.get("cuda"):
        return f"{where}, CUDA available ({py.get('cuda_devices')} device(s))"
    if settings.cpu_only:
        return f"{where}, no CUDA (CPU_ONLY=1: running on CPU on purpose)"
    raise RemoteError(f"torch.cuda.is_available() is False on this pod ({where}); use a pod with a working "
                      "GPU driver, or set CPU_ONLY=1 if this target has no GPU on purpose")


def _plan_clone(url: str, repo: Facts, steps: list[Step]) -> bool:
    path = repo["path"]
    if repo["is_git"]:
        origin = repo.get("origin") or ""
        if origin and not _same_url(origin, url):
            raise RemoteError(f"{path} is a checkout of {origin}, not REPO_URL={url}; "
                              "remove it or set OPS_REMOTE_REPO to another path")
        steps.append(Step("clone", False, f"already cloned at {path} (HEAD {str(repo.get('head'))[:12]})"))
        return False
    if repo["exists"] and not repo.get("empty"):
        raise RemoteError(f"OPS_REMOTE_REPO={path} exists and is not a git checkout; "
                          "move it away or set OPS_REMOTE_REPO to another path")
    steps.append(Step("clone", True, f"git clone {url} {path}"))
    return True


def _plan_ref(settings: Settings, facts: Facts, url: str, steps: list[Step]) -> tuple[str, str]:
    pr = settings.checkout_pr
    ref_kind, ref = ("pr", pr) if pr else ("branch", settings.checkout_branch)
    if ref_kind == "branch" and (not ref or ref.startswith("-") or any(c in ref for c in " ~^:?*[\\")):
        raise ConfigError(f"config: CHECKOUT_BRANCH={ref!r} is not a valid branch name")
    remote = facts.get("remote") or {}
    if ref_kind == "branch" and remote.get("checked") and not remote.get("has_branch"):
        default = remote.get("default")
        known = (f"origin's default branch is {default}: set CHECKOUT_BRANCH={default}" if default else
                 f"origin has {_short_list(list(remote.get('branches') or [])) or 'no branches'}")
        raise RemoteError(f"branch {ref} is not on origin ({url}); {known}, or did you push it?")
    steps.append(Step("checkout", True, f"pull request #{ref} (pull/{ref}/head)" if pr else f"branch {ref}"))
    return ref_kind, ref


def _plan_venv(settings: Settings, venv: Facts, py: Facts, env_site: str) -> tuple[str, str]:
    inside = venv.get("torch_inside") or []
    if settings.venv_recreate and venv["exists"]:
        return "recreate", "VENV_RECREATE=1"
    if inside:
        return "recreate", f"torch resolves inside the venv ({inside[0]})"
    if venv["exists"] and not (venv["python_ok"] and venv["system_site"]):
        return "recreate", "the venv is broken or lacks --system-site-packages"
    if venv["exists"] and venv.get("home_real") and py.get("exe_dir") and venv["home_real"] != py["exe_dir"]:
        return "recreate", f"the venv was made from another python ({venv.get('home')})"
    if venv["exists"] and (venv.get("env_site") or "") != env_site:
        return "recreate", "REMOTE_PYTHON_BIN's own venv changed"
    if venv["exists"]:
        return "keep", f"{venv['path']} is fine"
    extra = " (+ the packages of REMOTE_PYTHON_BIN's venv)" if env_site else ""
    return "create", f"python -m venv --system-site-packages {venv['path']}{extra}"


def _data_checks(data: Facts) -> list[Facts]:
    if "checks" in data:
        return list(data["checks"])
    return [{"pattern": "fineweb_train_*.bin", "matches": data["train"]},
            {"pattern": "fineweb_val_*.bin", "matches": data["val"]}]


def _plan_data(settings: Settings, data: Facts, steps: list[Step]) -> str:
    data_dir, checks = settings.data_dir, _data_checks(data)
    missing = [c["pattern"] for c in checks if not c["matches"]]
    if not checks:
        steps.append(Step("data", False, "DATA_CHECK is empty: the data is not checked"))
        return "present"
    prepare = settings.data_prepare_cmd.strip()
    if not missing:
        found = sum(len(c["matches"]) for c in checks)
        skipped = ": DATA_PREPARE_CMD skipped" if prepare else ""
        steps.append(Step("data", False, f"{found} file(s) in {data_dir} match DATA_CHECK{skipped}"))
        return "present"
    if prepare:
        steps.append(Step("data", True, f"prepare: DATA_PREPARE_CMD in {settings.ops_remote_repo} (venv first on "
                                        f"PATH), then DATA_CHECK in {data_dir} again"))
        return "prepare"
    if settings.download_fineweb:
        staged = data.get("fs_type") == "fuse.s3fs"
        where = f"staged on local disk, then copied into {data_dir} (s3fs)" if staged else f"into {data_dir}"
        steps.append(Step("data", True, f"download with FINEWEB_DOWNLOAD_CMD {where}"))
        return "download_staged" if staged else "download"
    if tuple(settings.data_check) == FINEWEB_PAIR:
        raise RemoteError(
            f"no FineWeb shard pair in DATA_DIR={data_dir} (found {len(data['train'])} train, "
            f"{len(data['val'])} val); put fineweb_train_*.bin and fineweb_val_*.bin there, or set DOWNLOAD_FINEWEB=1"
        )
    raise RemoteError(f"nothing in DATA_DIR={data_dir} matches {' '.join(missing)} (DATA_CHECK); put the data "
                      "there, set DATA_CHECK to what your data looks like (empty: no check), or DOWNLOAD_FINEWEB=1")


def _plan_link(settings: Settings, checks: list[Facts], link: Facts, data_action: str) -> Step:
    mode, link_dir = settings.data_link, settings.data_link_dir
    if mode == "none":
        return Step("link", False, "DATA_LINK=none: the data is not linked into the checkout")
    if not link_dir or leaves(link_dir):
        raise ConfigError(f"config: DATA_LINK_DIR={link_dir!r} is not valid: expected a path inside TRAIN_WORKDIR")
    if mode == "dir":
        if link.get("is_data_link"):
            return Step("link", False, f"{link['dir']} is a link to DATA_DIR")
        if link.get("occupied"):
            raise RemoteError(f"{link['dir']} exists in the checkout and is not a link; DATA_LINK=dir would replace "
                              "it: pick another DATA_LINK_DIR, or DATA_LINK=shards")
        return Step("link", True, f"link {link['dir']} to DATA_DIR")
    wanted = {n for c in checks for n in c["matches"]}
    if data_action == "present" and set(link.get("linked") or []) >= wanted:
        return Step("link", False, f"data linked in {link['dir']}")
    return Step("link", True, f"link the files DATA_CHECK matches into {link['dir']}")


def plan_checkout(settings: Settings, facts: Facts) -> CheckoutPlan:
    url = require_repo_url(settings)
    check_data_keys(settings)
    repo, venv, py, data = facts["repo"], facts["venv"], facts["python"], facts["data"]
    steps: list[Step] = []
    clone = _plan_clone(url, repo, steps)
    steps.append(Step("fetch", True, "git fetch origin"))
    dirty = list(repo.get("dirty") or [])
    force_clean = settings.checkout_force_clean
    if dirty and not force_clean:
        raise RemoteError(f"tracked modifications in {repo['path']}: {_short_list(dirty)}; commit or stash them on "
                          "the pod, or set CHECKOUT_FORCE_CLEAN=1 to discard them")
    steps.append(Step("clean", bool(dirty), f"discard modifications: {_short_list(dirty)}" if dirty
                      else "no tracked modifications"))
    ref_kind, ref = _plan_ref(settings, facts, url, steps)
    expect = settings.expect_git_sha.lower()
    steps.append(Step("verify", False, f"HEAD must start with {expect}" if expect else "EXPECT_GIT_SHA unset",
                      check=bool(expect)))
    torch_line = check_torch(settings, py)  # torch first: it is the pod image's, and everything below needs it
    env_site = tuple(py.get("site") or ()) if py.get("is_venv") else ()
    venv_action, why = _plan_venv(settings, venv, py, "\n".join(env_site))
    steps.append(Step("venv", venv_action != "keep", f"{venv_action}: {why}"))
    steps.append(Step("torch", False, torch_line, check=True))
    install_cmd = settings.repo_install_cmd
    if not install_cmd.strip():
        steps.append(Step("install", False, "REPO_INSTALL_CMD is empty: nothing to install"))
    elif venv_action == "keep" and venv.get("installed_hash") and venv["installed_hash"] == repo.get("deps_hash"):
        steps.append(Step("install", False, "dependencies up to date (rechecked after the checkout)"))
    else:
        steps.append(Step("install", True, install_cmd))
    data_action = _plan_data(settings, data, steps)
    steps.append(_plan_link(settings, _data_checks(data), facts["link"], data_action))
    return CheckoutPlan(clone, bool(dirty) and force_clean, ref_kind, ref, expect, venv_action, data_action,
                        tuple(steps), env_site)
