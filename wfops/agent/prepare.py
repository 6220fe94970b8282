"""Preparing the pod: `bootstrap` (prerequisites, bootstrap script, W&B setup) and `checkout-apply` (the
steps of the client's wfops.prepare.CheckoutPlan in the order of SPEC §2, stopping at the first failure, exit 6).

Client values are data: they reach children as separate argv words. The only shell code is the fixed
`bash -c` wrappers below and the user commands meant as shell code (REPO_INSTALL_CMD, FINEWEB_DOWNLOAD_CMD,
and DATA_PREPARE_CMD, which runs from a mode-600 file so that its text is in no argv).
Children read /dev/null and write to our stderr, as do the `wfops: [step] ...` notes. Stdlib only, Python >= 3.8.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from . import data, facts, store, wire, workflow
from .data import FINEWEB_CHECK
from .registry import Refusal, command
from .states import EXIT_USAGE, VENV_DIR, pod_path
from .steps import fail, git_credentials, in_venv, must, note, run, with_env
from .wire import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, List, Sequence, Tuple

    from .states import Layout
    from .wire import Json

TORCH_CHECK = "import torch, sys; print(torch.__file__); print(int(torch.cuda.is_available()))"
PLAN_KEYS = ("clone", "force_clean", "ref_kind", "ref", "expect_sha", "venv", "data", "link")


def _mkdirs(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        fail("cannot create %s: %s" % (path, exc.strerror or exc))


def _remove(path: str) -> None:  # rm -rf
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
    except OSError as exc:
        fail("cannot remove %s: %s" % (path, exc.strerror or exc))


def _unlink(path: str) -> None:  # rm -f
    try:
        os.unlink(path)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            note("warning: cannot remove %s: %s" % (path, exc.strerror or exc))


# ------------------------------------------------------------------ bootstrap

def _missing(prereqs: List[Any]) -> str:  # each followed by a space, as the shell's messages had them
    return "".join("%s " % c for c in prereqs if not shutil.which(c))


def _apt_install(missing: str, apt_packages: List[Any]) -> None:
    sudo = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            fail("missing %s and not root: install them, or give this user sudo" % missing)
        sudo = ["sudo", "-n"]
    if not shutil.which("apt-get"):
        fail("missing %s and this pod has no apt-get: install them by hand" % missing)
    note("[prereqs] AUTO_INSTALL_PREREQS=1: apt-get install %s" % " ".join(apt_packages))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    must(sudo + ["apt-get", "update", "-q"], "apt-get update failed (see above)", env=env)
    must(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends"] + apt_packages,
         "apt-get install failed (see above)", env=env)


def _prereqs(prereqs: List[Any], auto_install: bool, apt_packages: List[Any]) -> str:
    """Check (and with auto_install, apt-get install) the prerequisites; returns what was installed."""
    missing = _missing(prereqs)
    if not missing:
        note("[prereqs] all present: %s" % " ".join(prereqs))
        return ""
    note("[prereqs] missing: %s" % missing)
    if not auto_install:
        fail("missing on the pod: %s; set AUTO_INSTALL_PREREQS=1 to apt-get install APT_PACKAGES, or install them"
             % missing)
    _apt_install(missing, apt_packages)
    installed, missing = missing, _missing(prereqs)
    if missing:
        fail("still missing after apt-get: %s (add their packages to APT_PACKAGES)" % missing)
    note("[prereqs] installed; all present now")
    return installed.rstrip(" ")


def _bootstrap_script(pod: Layout, script: str) -> str:
    if not script:
        note("[bootstrap script] BOOTSTRAP_SCRIPT is empty: none to run")
        return "skipped"
    if not os.path.isfile(script):
        note("[bootstrap script] %s not found; nothing to run" % script)
        return "skipped"
    note("[bootstrap script] running %s" % script)
    rc = run(with_env(pod, ["bash", script]))
    if rc != 0:
        note("warning: %s failed (exit %d); continuing" % (script, rc))
    return str(rc)


def _wandb_setup(pod: Layout, script: str) -> str:  # its output may hold the key: a private log, never shown
    if not script:
        note("warning: W&B setup requested but WANDB_SETUP_SCRIPT is empty")
        return "missing"
    if not os.path.isfile(script):
        note("warning: W&B setup requested but %s does not exist" % script)
        return "missing"
    log = os.path.join(pod.control, "wandb-setup.log")
    try:
        os.makedirs(pod.control, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        fail("cannot create %s: %s" % (log, exc.strerror or exc))
    try:
        os.fchmod(fd, 0o600)  # also when an older log was left with another mode
        rc = run(with_env(pod, ["bash", script]), stdout=fd, stderr=subprocess.STDOUT)
    finally:
        os.close(fd)
    note("[wandb] %s exited %d (output kept in %s, mode 600)" % (script, rc, log))
    if rc != 0:
        note("warning: W&B setup failed; runs with wandb_log will fail to log")
    return str(rc)


@command(wire.BOOTSTRAP)
def bootstrap(pod: Layout, prereqs: List[Any], auto_install: bool, apt_packages: List[Any], bootstrap_script: str,
              wandb_script: str, run_wandb: bool) -> Json:
    prereqs, apt_packages = [str(c) for c in prereqs], [str(p) for p in apt_packages]
    installed = _prereqs(prereqs, auto_install, apt_packages)
    boot_rc = _bootstrap_script(pod, pod_path(bootstrap_script))
    if run_wandb:
        wandb_rc = _wandb_setup(pod, pod_path(wandb_script))
    else:
        wandb_rc = "skipped"
        note("[wandb] setup not requested (SWEEP_WANDB=0 and RUN_WANDB_SETUP=0)")
    state = workflow.succeed(pod, "bootstrap", "prerequisites present")
    return {"installed": installed, "bootstrap_script": boot_rc, "wandb_setup": wandb_rc, "state": state}


# ------------------------------------------------------------------ checkout-apply

class Checkout:
    """The steps of one checkout plan, each stopping the command (exit 6) when it fails."""

    def __init__(self, pod: Layout, plan: Json, repo: str, data_dir: str, train_workdir: str, link_dir: str,
                 install_cmd: str, repo_url: str, remote_python: str, cpu_only: bool, download_cmd: str,
                 data_check: Sequence[Any] = FINEWEB_CHECK, data_link: str = "shards", prepare_cmd: str = "") -> None:
        missing = [k for k in PLAN_KEYS if k not in plan]
        if missing:
            raise Refusal(EXIT_USAGE, "checkout-apply: the plan lacks %s" % ", ".join(missing))
        self.pod, self.plan = pod, plan
        self.ref, self.pr = str(plan["ref"]), plan["ref_kind"] == "pr"
        self.expect = str(plan["expect_sha"] or "")
        self.repo = os.path.abspath(pod_path(repo))
        self.venv = self.repo + "/" + VENV_DIR
        self.data = os.path.abspath(pod_path(data_dir))
        self.work = self.repo + "/" + train_workdir
        self.link = self.work + "/" + link_dir
        self.install_cmd, self.pybin = install_cmd, remote_python
        self.url, self.git_env, self.git_cfg = git_credentials(repo_url)
        self.cpu_only, self.download_cmd = cpu_only, download_cmd
        self.data_check = [str(p) for p in data_check]
        self.data_link, self.env_site = data_link, [str(d) for d in plan.get("env_site") or []]
        self.prepare_cmd = prepare_cmd

    def git(self, args: List[Any], message: str) -> None:
        must(["git"] + self.git_cfg + args, message, cwd=self.repo, env=self.git_env)

    def git_out(self, args: List[str]) -> Tuple[int, str]:  # (exit code, stripped stdout)
        return facts.run_out(["git"] + args, cwd=self.repo, timeout=None)

    def clone(self) -> None:
        if self.plan["clone"]:
            note("[clone] git clone %s %s" % (self.url, self.repo))
            _mkdirs(os.path.dirname(self.repo.rstrip("/")) or "/")
            must(["git"] + self.git_cfg + ["clone", "-q", "--", self.url, self.repo],
                 "git clone of REPO_URL failed (see above); check the URL and that the pod can reach it",
                 env=self.git_env)
        if not os.path.isdir(self.repo):
            fail("%s is not a directory; rerun checkout to clone REPO_URL there" % self.repo)

    def fetch(self) -> str:  # returns the ref to check out
        note("[fetch] git fetch origin")
        self.git(["fetch", "-q", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*"],
                 "git fetch from origin failed (see above)")
        if self.pr:
            self.git(["fetch", "-q", "origin", "+refs/pull/%s/head:refs/remotes/origin/pr/%s" % (self.ref, self.ref)],
                     "pull request #%s was not found on origin (no refs/pull/%s/head); check CHECKOUT_PR"
                     % (self.ref, self.ref))
            return "refs/remotes/origin/pr/" + self.ref
        target = "refs/remotes/origin/" + self.ref
        if run(["git", "rev-parse", "-q", "--verify", target + "^{commit}"], self.repo, stdout=subprocess.DEVNULL):
            fail("branch %s is not on origin (%s); did you push it?" % (self.ref, self.url))
        return target

    def clean(self) -> None:
        if not self.git_out(["status", "--porcelain", "--untracked-files=no"])[1]:
            return
        if not self.plan["force_clean"]:
            fail("tracked modifications appeared in %s; commit or stash them, or set CHECKOUT_FORCE_CLEAN=1"
                 % self.repo)
        note("[clean] CHECKOUT_FORCE_CLEAN=1: discarding tracked modifications")
        self.git(["reset", "-q", "--hard"], "git reset --hard in %s failed (see above)" % self.repo)

    def checkout(self, target: str) -> Tuple[Any, ...]:  # and verify EXPECT_GIT_SHA: (previous HEAD or "", new HEAD)
        code, old = self.git_out(["rev-parse", "-q", "--verify", "HEAD"])
        old = old if code == 0 else ""
        code, new = self.git_out(["rev-parse", target + "^{commit}"])
        if code != 0 or not new:
            fail("cannot resolve %s in %s" % (target, self.repo))
        how, what = (["--detach", new], "pull request #") if self.pr else (["-B", self.ref, target], "branch ")
        self.git(["checkout", "-q"] + how, "git checkout of %s%s failed (see above)" % (what, self.ref))
        note("[checkout] already at %s" % new if old == new else "[checkout] now at %s" % new)
        if self.expect:
            if not new.startswith(self.expect):
                fail("HEAD is %s, not EXPECT_GIT_SHA=%s; push that commit or update EXPECT_GIT_SHA"
                     % (new, self.expect))
            note("[verify] HEAD matches EXPECT_GIT_SHA")
        return old, new

    def make_venv(self) -> int:  # 1 when the venv was (re)created
        action = self.plan["venv"]
        if action == "recreate":
            note("[venv] recreating %s" % self.venv)
            _remove(self.venv)
        if action not in ("create", "recreate"):
            note("[venv] keeping %s" % self.venv)
            return 0
        base = shutil.which(self.pybin)
        if not base:
            fail("REMOTE_PYTHON_BIN=%s is not on the pod's PATH" % self.pybin)
        must([base, "-m", "venv", "--system-site-packages", self.venv],
             "cannot create the venv with REMOTE_PYTHON_BIN (on Debian/Ubuntu: apt-get install python3-venv)",
             cwd=self.repo)
        note("[venv] created %s (--system-site-packages)" % self.venv)
        self.see_env()
        return 1

    def see_env(self) -> None:
        """REMOTE_PYTHON_BIN inside a venv: --system-site-packages sees only its base python, so a .pth file
        adds that venv's own site dirs (its torch and packages) to ours."""
        if not self.env_site:
            return
        sites = glob.glob(os.path.join(self.venv, "lib", "python*", "site-packages"))
        if not sites:
            fail("the new venv has no site-packages folder; cannot make it see %s" % " ".join(self.env_site))
        with open(os.path.join(sites[0], "_wfops_env.pth"), "w", encoding="utf-8") as fh:
            fh.write("".join(d + "\n" for d in self.env_site))
        store.write_bytes(os.path.join(self.venv, facts.ENV_PTH_MARKER), "\n".join(self.env_site).encode())
        note("[venv] it also sees the packages of REMOTE_PYTHON_BIN's venv (%s)" % ", ".join(self.env_site))

    def install(self, venv_changed: int) -> int:  # 1 when REPO_INSTALL_CMD ran (the deps hash changed)
        if not self.install_cmd:
            return 0
        deps = facts.deps_hash(self.repo, self.install_cmd)
        marker = os.path.join(self.venv, facts.INSTALLED_MARKER)
        if not venv_changed and os.path.isfile(marker) and store.read_text(marker) == deps:
            note("[install] dependencies up to date; nothing to install")
            return 0
        note("[install] %s" % self.install_cmd)
        _unlink(marker)
        must(in_venv(self.pod, self.venv, self.install_cmd),
             "installing the repo's dependencies failed (REPO_INSTALL_CMD; see above)", cwd=self.repo)
        if facts.venv_torch_dirs(self.venv):
            fail("installing the dependencies put a torch inside %s; the image's torch must stay in charge: drop or "
                 "pin torch in the repo's dependencies, then rerun checkout (the venv will be rebuilt)" % self.venv)
        store.write_bytes(marker, (deps + "\n").encode())
        return 1

    def check_torch(self) -> None:  # as the venv sees it: imports, from outside the venv, CUDA unless CPU_ONLY
        try:
            p = subprocess.run([os.path.join(self.venv, "bin", "python"), "-c", TORCH_CHECK], cwd=self.repo,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True)
            code, out, err = p.returncode, p.stdout.strip(), p.stderr.strip()
        except OSError as exc:
            code, out, err = 127, "", str(exc)
        if code != 0 or not out:
            said = (out + "\n" + err).strip().splitlines()
            fail("torch does not import inside the new venv: %s" % (said[-1] if said else "exit %d" % code))
        if err:
            sys.stderr.write(err + "\n")  # warnings of the import: shown, not parsed
        lines = out.splitlines()
        where = lines[0]
        if where.startswith(self.venv + "/") or os.path.realpath(where).startswith(os.path.realpath(self.venv) + "/"):
            fail("torch resolves inside the venv (%s); rerun with VENV_RECREATE=1" % " ".join(lines))
        if not self.cpu_only and lines[-1] != "1":
            fail("torch.cuda.is_available() is False inside the venv; set CPU_ONLY=1 only if this target has no "
                 "GPU on purpose")
        note("[torch] the venv uses %s" % where)

    def fetch_data(self) -> int:  # 1 when DATA_PREPARE_CMD ran
        kind = self.plan["data"]
        if kind == "prepare":
            return data.prepare(self.pod, self.repo, self.venv, self.data, self.data_check, self.prepare_cmd)
        if kind not in ("download", "download_staged"):
            note("[data] present in %s" % self.data if self.data_check else "[data] DATA_CHECK is empty: not checked")
            return 0
        _mkdirs(self.data)
        staged = kind == "download_staged"
        dl = tempfile.mkdtemp(prefix="wfops-data.") if staged else self.data
        if staged:
            note("[data] DATA_DIR is on s3fs: downloading into %s on local disk first" % dl)
        try:
            note("[data] running FINEWEB_DOWNLOAD_CMD in %s" % self.work)
            must(in_venv(self.pod, self.venv, self.download_cmd),
                 "the data downloader failed (FINEWEB_DOWNLOAD_CMD; see above)",
                 cwd=self.work, env=dict(os.environ, WF_DOWNLOAD_DIR=dl))
            self.collect(dl)
        finally:
            if staged:
                shutil.rmtree(dl, ignore_errors=True)
        missing = data.missing(self.data, self.data_check)
        if missing:
            fail("the downloader finished but DATA_DIR has nothing matching %s (DATA_CHECK)" % " ".join(missing))
        return 0

    def _in(self, directory: str) -> List[Any]:  # files of `directory` that DATA_CHECK matches (absolute paths)
        return [os.path.join(directory, n) for n in data.matched_files(data.matches(directory, self.data_check))]

    def collect(self, dl: str) -> None:
        """Move the downloaded files into DATA_DIR (copy to .NAME.part, rename, remove the original)."""
        got = self._in(dl)
        if not got:  # downloaders that write next to themselves (upstream's cached_fineweb10B.py)
            got = [f for f in self._in(self.link) if not os.path.islink(f)]
        data_real = os.path.realpath(self.data)
        for f in got:
            name = os.path.basename(f)
            if os.path.realpath(os.path.dirname(f)) == data_real:
                continue  # already in DATA_DIR
            part = os.path.join(self.data, "." + name + ".part")
            try:
                shutil.copy(f, part)
                os.replace(part, os.path.join(self.data, name))
            except OSError as exc:
                note("%s: %s" % (name, exc))
                _unlink(part)
                fail("copying %s into DATA_DIR failed" % name)
            _unlink(f)
            note("[data] %s -> %s/" % (name, self.data))

    def link_data(self) -> int:  # how many links were made; they and .venv are kept out of `git status`
        made = []
        if self.plan["link"]:
            try:
                made = data.link(self.data, self.link, self.data_link, self.data_check)
            except OSError as exc:
                fail("cannot link the data into %s: %s" % (self.link, exc.strerror or exc))
            note("[link] %d link(s) to DATA_DIR in %s" % (len(made), self.link))
        elif self.data_link == "none":
            note("[link] DATA_LINK=none: the data is not linked into the checkout")
        else:
            note("[link] the data is already linked in %s" % self.link)
        known = self._in(self.link) if self.data_link == "shards" else [self.link]
        data.exclude(self.repo, [self.venv] + made + ([] if self.data_link == "none" else known))
        return len(made)


@command(wire.CHECKOUT_APPLY)
def checkout_apply(pod: Layout, plan: Json, repo: str, data_dir: str, train_workdir: str, link_dir: str,
                   install_cmd: str,
                   repo_url: str, remote_python: str, cpu_only: bool, download_cmd: str,
                   data_check: Sequence[Any] = FINEWEB_CHECK, data_link: str = "shards", prepare_cmd: str = "") -> Json:
    c = Checkout(pod, plan, repo, data_dir, train_workdir, link_dir, install_cmd, repo_url, remote_python,
                 cpu_only, download_cmd, data_check, data_link, prepare_cmd)
    c.clone()
    target = c.fetch()
    c.clean()
    old, new = c.checkout(target)
    venv_changed = c.make_venv()
    installed = c.install(venv_changed)
    if venv_changed or installed:
        c.check_torch()
    prepared = c.fetch_data()
    linked = c.link_data()
    state = workflow.succeed(pod, "checkout", "HEAD %s" % new)
    return {"head": new, "previous": old, "venv_changed": venv_changed, "installed": installed, "linked": linked,
            "prepared": prepared, "repo": c.repo, "state": state}
