"""Pod preparation, planned in pure Python from one probe of the pod ("facts").

`plan_checkout(settings, facts)` decides what `checkout` must do and refuses, before anything on the
pod changes, whatever the probe already shows to be wrong (an occupied repo path, tracked
modifications, missing or CPU-only torch, missing data without a download). The apply script then
does only the steps marked to do, in the order of SPEC §2, and stops at the first failure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .config import Settings
from .errors import ConfigError, RemoteError

TORCH_MIN = (2, 3)


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
    data: str  # "present" | "download" | "download_staged"
    steps: tuple[Step, ...] = field(default=())

    def render(self) -> str:
        width = max(len(s.name) for s in self.steps)
        return "\n".join(f"  {s.action.ljust(5)}  {s.name.ljust(width)}  {s.detail}" for s in self.steps)

    def does(self, name: str) -> bool:
        return any(s.name == name and s.do for s in self.steps)


def require_repo_url(settings: Settings) -> str:
    url = settings.values["REPO_URL"]
    if not url:
        raise ConfigError("config: REPO_URL is empty; checkout needs the git URL of your training repo")
    if url.startswith("-") or "\n" in url:
        raise ConfigError(f"config: REPO_URL={settings.mask(url)!r} is not a git URL")
    return url


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


def check_torch(settings: Settings, py: dict) -> str:
    """Refuse a pod whose REMOTE_PYTHON_BIN has no usable torch; return a one-line description."""
    bin_ = settings.values["REMOTE_PYTHON_BIN"]
    if not py.get("found"):
        raise RemoteError(f"REMOTE_PYTHON_BIN={bin_}: {py.get('error', 'not found')} on the pod; "
                          "set it to the python of the image's torch")
    if not py.get("importable"):
        hint = ""
        if py.get("is_venv"):
            hint = (f" ({py.get('python')} is itself a virtualenv: --system-site-packages would see its base "
                    f"interpreter in {py.get('base_prefix')}, not this venv's packages)")
        raise RemoteError(f"torch does not import with REMOTE_PYTHON_BIN={bin_} ({py.get('error')}){hint}; "
                          "the pod image must provide torch: install it into that python or point "
                          "REMOTE_PYTHON_BIN at the one that has it")
    version = str(py.get("torch_version"))
    if _version_tuple(version) < TORCH_MIN:
        raise RemoteError(f"torch {version} at {py.get('torch_file')} is older than "
                          f"{'.'.join(map(str, TORCH_MIN))}; use a newer pod image or REMOTE_PYTHON_BIN")
    where = f"torch {version} from {py.get('torch_file')}"
    if py.get("cuda"):
        return f"{where}, CUDA available ({py.get('cuda_devices')} device(s))"
    if settings["CPU_ONLY"]:
        return f"{where}, no CUDA (CPU_ONLY=1: running on CPU on purpose)"
    raise RemoteError(f"torch.cuda.is_available() is False on this pod ({where}); use a pod with a working "
                      "GPU driver, or set CPU_ONLY=1 if this target has no GPU on purpose")


def plan_checkout(settings: Settings, facts: dict) -> CheckoutPlan:
    url = require_repo_url(settings)
    repo, venv, py, data, link = facts["repo"], facts["venv"], facts["python"], facts["data"], facts["link"]
    path = repo["path"]
    steps: list[Step] = []

    # clone
    if repo["is_git"]:
        origin = repo.get("origin") or ""
        if origin and not _same_url(origin, url):
            raise RemoteError(f"{path} is a checkout of {origin}, not REPO_URL={url}; "
                              "remove it or set OPS_REMOTE_REPO to another path")
        clone = False
        steps.append(Step("clone", False, f"already cloned at {path} (HEAD {str(repo.get('head'))[:12]})"))
    elif repo["exists"] and not repo.get("empty"):
        raise RemoteError(f"OPS_REMOTE_REPO={path} exists and is not a git checkout; "
                          "move it away or set OPS_REMOTE_REPO to another path")
    else:
        clone = True
        steps.append(Step("clone", True, f"git clone {url} {path}"))
    steps.append(Step("fetch", True, "git fetch origin"))

    # tracked modifications
    dirty = list(repo.get("dirty") or [])
    force_clean = bool(settings["CHECKOUT_FORCE_CLEAN"])
    if dirty and not force_clean:
        raise RemoteError(f"tracked modifications in {path}: {_short_list(dirty)}; commit or stash them on the "
                          "pod, or set CHECKOUT_FORCE_CLEAN=1 to discard them")
    steps.append(Step("clean", bool(dirty), f"discard modifications: {_short_list(dirty)}" if dirty
                      else "no tracked modifications"))

    # ref
    pr = settings.values["CHECKOUT_PR"]
    ref_kind, ref = ("pr", pr) if pr else ("branch", settings.values["CHECKOUT_BRANCH"])
    if ref_kind == "branch" and (not ref or ref.startswith("-") or any(c in ref for c in " ~^:?*[\\")):
        raise ConfigError(f"config: CHECKOUT_BRANCH={ref!r} is not a valid branch name")
    steps.append(Step("checkout", True, f"pull request #{ref} (pull/{ref}/head)" if pr else f"branch {ref}"))
    expect = settings.values["EXPECT_GIT_SHA"].lower()
    steps.append(Step("verify", False, f"HEAD must start with {expect}" if expect else "EXPECT_GIT_SHA unset",
                      check=bool(expect)))

    # torch first: it is the pod image's, and everything below needs it
    torch_line = check_torch(settings, py)
    inside = venv.get("torch_inside") or []
    if settings["VENV_RECREATE"] and venv["exists"]:
        venv_action, why = "recreate", "VENV_RECREATE=1"
    elif inside:
        venv_action, why = "recreate", f"torch resolves inside the venv ({inside[0]})"
    elif venv["exists"] and not (venv["python_ok"] and venv["system_site"]):
        venv_action, why = "recreate", "the venv is broken or lacks --system-site-packages"
    elif venv["exists"] and venv.get("home_real") and py.get("exe_dir") and venv["home_real"] != py["exe_dir"]:
        venv_action, why = "recreate", f"the venv was made from another python ({venv.get('home')})"
    elif venv["exists"]:
        venv_action, why = "keep", f"{venv['path']} is fine"
    else:
        venv_action, why = "create", f"python -m venv --system-site-packages {venv['path']}"
    steps.append(Step("venv", venv_action != "keep", f"{venv_action}: {why}"))
    steps.append(Step("torch", False, torch_line, check=True))
    install_cmd = settings.values["REPO_INSTALL_CMD"]
    if not install_cmd:
        steps.append(Step("install", False, "REPO_INSTALL_CMD is empty"))
    elif venv_action == "keep" and venv.get("installed_hash") and venv["installed_hash"] == repo.get("deps_hash"):
        steps.append(Step("install", False, "dependencies up to date (rechecked after the checkout)"))
    else:
        steps.append(Step("install", True, install_cmd))

    # data
    data_dir = settings.values["DATA_DIR"]
    have_pair = bool(data["train"]) and bool(data["val"])
    if have_pair:
        data_action = "present"
        steps.append(Step("data", False, f"{len(data['train'])} train + {len(data['val'])} val shards in {data_dir}"))
    elif settings["DOWNLOAD_FINEWEB"]:
        staged = data.get("fs_type") == "fuse.s3fs"
        data_action = "download_staged" if staged else "download"
        where = f"staged on local disk, then copied into {data_dir} (s3fs)" if staged else f"into {data_dir}"
        steps.append(Step("data", True, f"download a minimal shard pair {where}"))
    else:
        raise RemoteError(
            f"no FineWeb shard pair in DATA_DIR={data_dir} (found {len(data['train'])} train, "
            f"{len(data['val'])} val); put fineweb_train_*.bin and fineweb_val_*.bin there, or set DOWNLOAD_FINEWEB=1"
        )
    all_linked = have_pair and set(link["linked"]) >= set(data["train"]) | set(data["val"])
    steps.append(Step("link", not all_linked, f"shards linked in {link['dir']}" if all_linked
                      else f"link shards into {link['dir']}"))
    return CheckoutPlan(clone, bool(dirty) and force_clean, ref_kind, ref, expect, venv_action, data_action,
                        tuple(steps))
