"""`bootstrap` and `checkout`: prepare the pod (root-level tasks: `inv bootstrap`, `inv checkout`)."""

from __future__ import annotations

import dataclasses
import sys

from wfops.output import pairs, to_json, visible
from wfops.preparation import plan_checkout, require_repo_url
from wfops.tasks._base import JSON_HELP, emit, settings_for, wftask
from wfops.transport.command import PodCommand, call_once


@wftask(help={"json": JSON_HELP}, fleet=True,
        interrupted="bootstrap may be partly done: run fsm.status, then bootstrap again")
def bootstrap(c, json=False, config=None):
    """Check the pod's prerequisites, run its bootstrap and W&B setup scripts.

    Missing prerequisites are apt-installed when AUTO_INSTALL_PREREQS=1; BOOTSTRAP_SCRIPT runs if it exists
    (a failure only warns); WANDB_SETUP_SCRIPT runs when SWEEP_WANDB=1 or RUN_WANDB_SETUP=1.
    """
    settings = settings_for(c, config)
    run_wandb = bool(settings.sweep_wandb or settings.run_wandb_setup)
    data = call_once(
        "bootstrap", settings, "bootstrap", prereqs=list(settings.prereq_commands),
        auto_install=settings.auto_install_prereqs, apt_packages=list(settings.apt_packages),
        bootstrap_script=settings.bootstrap_script, wandb_script=settings.wandb_setup_script,
        run_wandb=run_wandb,
    )
    emit(data, json, lambda: "pod bootstrapped: state BOOTSTRAPPED"
         + (f" (installed: {data['installed']})" if data.get("installed") else ""))


@wftask(help={"dry_run": "probe the pod and print the plan; change nothing", "json": JSON_HELP}, fleet=True,
        interrupted="checkout may be partly done: run checkout --dry-run to see what is left")
def checkout(c, dry_run=False, json=False, config=None):
    """Check out REPO_URL on the pod with a venv over the image's torch, its dependencies and data.

    Probes the pod once, plans, and applies only what is missing: a second run changes nothing and says so.
    """
    settings = settings_for(c, config)
    require_repo_url(settings)
    v = settings
    common = dict(repo=v.ops_remote_repo, data_dir=v.data_dir, train_workdir=v.train_workdir,
                  link_dir=v.data_link_dir, install_cmd=v.repo_install_cmd,
                  data_check=list(settings.data_check), data_link=v.data_link)
    with PodCommand("checkout", settings) as cmd:
        facts = cmd.call("checkout-facts", dry_run=dry_run, repo=common["repo"], python=v.remote_python_bin,
                         data_dir=common["data_dir"], workdir=common["train_workdir"], link_dir=common["link_dir"],
                         mounts=v.wf_mount_table, install_cmd=common["install_cmd"],
                         data_check=common["data_check"], data_link=common["data_link"], repo_url=v.repo_url,
                         branch="" if v.checkout_pr else v.checkout_branch)
        plan = plan_checkout(settings, facts)
        if dry_run:
            if json:
                print(settings.mask(to_json({"facts": facts, "steps": [s.__dict__ for s in plan.steps]})))
            else:
                what = (f"nothing was changed but wfops' own pod agent, installed in {cmd.installed[0]}"
                        if cmd.installed else "nothing was changed")
                print(visible(settings.mask(f"checkout plan for {cmd.target.label} (dry run: {what})\n"
                                            f"{plan.render()}")))
            return
        print(visible(settings.mask(f"checkout plan:\n{plan.render()}")), file=sys.stderr)
        plan_data = dict(dataclasses.asdict(plan), link=plan.does("link"))
        data = cmd.call("checkout-apply", plan=plan_data, repo_url=v.repo_url,
                        remote_python=v.remote_python_bin, cpu_only=settings.cpu_only,
                        download_cmd=v.fineweb_download_cmd, **common)
    emit(data, json, lambda: pairs([
        ("state", data.get("state")),
        ("HEAD", data.get("head")),
        ("venv", "rebuilt" if data.get("venv_changed") else "unchanged"),
        ("dependencies", "installed" if data.get("installed") else "unchanged"),
        ("repo", data.get("repo")),
    ]))
