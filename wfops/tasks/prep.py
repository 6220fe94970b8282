"""`bootstrap` and `checkout`: prepare the pod (root-level tasks: `inv bootstrap`, `inv checkout`)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from wfops.fanout import Log, to_stderr
from wfops.output import pairs, visible
from wfops.preparation import check_data_keys, plan_checkout, require_repo_url
from wfops.settings.load import Settings
from wfops.targets.resolve import Member
from wfops.tasks._base import JSON_HELP, PodWork, on_pods, settings_for, wftask
from wfops.transport.command import PodCommand, call_once


def bootstrap_pod(settings: Settings, member: Member, log: Log = to_stderr) -> dict:
    """Bootstrap one pod (prerequisites, BOOTSTRAP_SCRIPT, W&B setup); what `bootstrap --json` prints."""
    run_wandb = bool(settings.sweep_wandb or settings.run_wandb_setup)
    return call_once(
        "bootstrap", settings, "bootstrap", member=member, log=log, prereqs=list(settings.prereq_commands),
        auto_install=bool(settings.auto_install_prereqs), apt_packages=list(settings.apt_packages),
        bootstrap_script=settings.bootstrap_script, wandb_script=settings.wandb_setup_script,
        run_wandb=run_wandb,
    )


def _bootstrapped_text(data: dict) -> str:
    return "pod bootstrapped: state BOOTSTRAPPED" + (f" (installed: {data['installed']})" if data.get("installed")
                                                      else "")


@wftask(help={"json": JSON_HELP},
        interrupted="bootstrap may be partly done: run fsm.status, then bootstrap again")
def bootstrap(c: Any, json: bool = False, config: str | None = None) -> None:
    """Prepare the pod: prerequisites, bootstrap and W&B setup.

    Check the pod's prerequisites, run its bootstrap and W&B setup scripts.

    Missing prerequisites are apt-installed when AUTO_INSTALL_PREREQS=1; BOOTSTRAP_SCRIPT runs if it exists
    (a failure only warns); WANDB_SETUP_SCRIPT runs when SWEEP_WANDB=1 or RUN_WANDB_SETUP=1.
    """
    on_pods(settings_for(c, config), json, PodWork(bootstrap_pod, _bootstrapped_text))


@dataclass(frozen=True)
class DryRun:
    """A checkout dry run's answer (secrets masked): what the pod has (`facts`), the steps a checkout would take,
    and, for the text, where it was asked and the plan as a table."""

    facts: dict
    steps: list[dict]
    pod: str  # the pod's label
    installed: list[str]  # where this dry run installed the pod agent (the one thing it may change)
    plan: str  # the steps as preparation.CheckoutPlan.render() shows them

    def json(self) -> dict:
        return {"facts": self.facts, "steps": self.steps, "installed": self.installed}

    def text(self) -> str:
        what = (f"nothing was changed but wfops' own pod agent, installed in {self.installed[0]}"
                if self.installed else "nothing was changed")
        return f"checkout plan for {self.pod} (dry run: {what})\n{self.plan}"


def _masked(settings: Settings, value: Any) -> Any:
    """`value` with every secret in its strings masked (a dry run's facts can hold REPO_URL with a token)."""
    if isinstance(value, str):
        return settings.mask(value)
    if isinstance(value, dict):
        return {k: _masked(settings, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(settings, v) for v in value]
    return value


def checkout_pod(settings: Settings, member: Member, dry_run: bool = False,
                 log: Log = to_stderr) -> dict | DryRun:
    """Check out REPO_URL on one pod (probe once, plan, apply only what is missing): what `checkout --json`
    prints; with `dry_run` the plan (a DryRun, secrets masked), nothing changed but wfops' own pod agent installed
    on a pod that lacks it (said: in the plan's title, or in a line before a failed probe's error)."""
    require_repo_url(settings)
    check_data_keys(settings)
    v = settings
    common: dict[str, Any] = dict(repo=v.ops_remote_repo, data_dir=v.data_dir, train_workdir=v.train_workdir,
                                  link_dir=v.data_link_dir, install_cmd=v.repo_install_cmd,
                                  data_check=list(settings.data_check), data_link=v.data_link)
    with (PodCommand("checkout", settings, member=member, log=log) as cmd,
          _said_installed(cmd, dry_run, log, settings.mask)):
        facts = cmd.call("checkout-facts", dry_run=dry_run, repo=common["repo"], python=v.remote_python_bin,
                         data_dir=common["data_dir"], workdir=common["train_workdir"], link_dir=common["link_dir"],
                         mounts=v.wf_mount_table, install_cmd=common["install_cmd"],
                         data_check=common["data_check"], data_link=common["data_link"], repo_url=v.repo_url,
                         branch="" if v.checkout_pr else v.checkout_branch)
        plan = plan_checkout(settings, facts)
        if dry_run:
            assert cmd.target is not None
            return DryRun(_masked(settings, facts), _masked(settings, [s.__dict__ for s in plan.steps]),
                          settings.mask(cmd.target.label), _masked(settings, cmd.installed),
                          settings.mask(plan.render()))
        log(visible(settings.mask(f"checkout plan:\n{plan.render()}")))
        plan_data = dict(dataclasses.asdict(plan), link=plan.does("link"))
        return cmd.call("checkout-apply", plan=plan_data, repo_url=v.repo_url,
                        remote_python=v.remote_python_bin, cpu_only=bool(settings.cpu_only),
                        download_cmd=v.fineweb_download_cmd, prepare_cmd=v.data_prepare_cmd, **common)


@contextlib.contextmanager
def _said_installed(cmd: PodCommand, dry_run: bool, log: Log, mask: Callable[[str], str]) -> Iterator[None]:
    """A dry run that fails after installing the pod agent (no data, a branch missing on origin) says so before
    its error line: it is what the dry run changed."""
    try:
        yield
    except Exception:
        if dry_run and cmd.installed:
            where = mask(cmd.installed[0])
            log(visible(f"dry run: nothing was changed but wfops' own pod agent, installed in {where}"))
        raise


def _checkout_text(data: dict | DryRun) -> str:
    if isinstance(data, DryRun):
        return data.text()
    items: list[tuple[str, object]] = [
        ("state", data.get("state")),
        ("HEAD", data.get("head")),
        ("venv", "rebuilt" if data.get("venv_changed") else "unchanged"),
        ("dependencies", "installed" if data.get("installed") else "unchanged"),
    ]
    if data.get("prepared"):
        items.append(("data", "prepared (DATA_PREPARE_CMD ran)"))
    return pairs([*items, ("repo", data.get("repo"))])


def _checkout_json(data: dict | DryRun) -> dict:
    return data.json() if isinstance(data, DryRun) else data


@wftask(help={"dry_run": "probe the pod and print the plan; change nothing but install wfops' own pod agent where "
                         "it is missing", "json": JSON_HELP},
        interrupted="checkout may be partly done: run checkout --dry-run to see what is left")
def checkout(c: Any, dry_run: bool = False, json: bool = False, config: str | None = None) -> None:
    """Check out REPO_URL on the pod with its venv and data.

    Check out REPO_URL on the pod with a venv over the image's torch, its dependencies and data.

    Probes the pod once, plans, and applies only what is missing: a second run changes nothing and says so.
    """
    on_pods(settings_for(c, config), json, PodWork(lambda s, m, log: checkout_pod(s, m, bool(dry_run), log),
                                                  _checkout_text, view=_checkout_json))
