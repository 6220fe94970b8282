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
    run_wandb = bool(settings["SWEEP_WANDB"] or settings["RUN_WANDB_SETUP"])
    data = call_once(
        "bootstrap", settings, "bootstrap", prereqs=list(settings["PREREQ_COMMANDS"]),
        auto_install=bool(settings["AUTO_INSTALL_PREREQS"]), apt_packages=list(settings["APT_PACKAGES"]),
        bootstrap_script=settings.values["BOOTSTRAP_SCRIPT"], wandb_script=settings.values["WANDB_SETUP_SCRIPT"],
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
    v = settings.values
    common = dict(repo=v["OPS_REMOTE_REPO"], data_dir=v["DATA_DIR"], train_workdir=v["TRAIN_WORKDIR"],
                  link_dir=v["DATA_LINK_DIR"], install_cmd=v["REPO_INSTALL_CMD"],
                  data_check=list(settings["DATA_CHECK"]), data_link=v["DATA_LINK"])
    with PodCommand("checkout", settings) as cmd:
        facts = cmd.call("checkout-facts", dry_run=dry_run, repo=common["repo"], python=v["REMOTE_PYTHON_BIN"],
                         data_dir=common["data_dir"], workdir=common["train_workdir"], link_dir=common["link_dir"],
                         mounts=v["WF_MOUNT_TABLE"], install_cmd=common["install_cmd"],
                         data_check=common["data_check"], data_link=common["data_link"], repo_url=v["REPO_URL"],
                         branch="" if v["CHECKOUT_PR"] else v["CHECKOUT_BRANCH"])
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
        data = cmd.call("checkout-apply", plan=plan_data, repo_url=v["REPO_URL"],
                        remote_python=v["REMOTE_PYTHON_BIN"], cpu_only=bool(settings["CPU_ONLY"]),
                        download_cmd=v["FINEWEB_DOWNLOAD_CMD"], **common)
    emit(data, json, lambda: pairs([
        ("state", data.get("state")),
        ("HEAD", data.get("head")),
        ("venv", "rebuilt" if data.get("venv_changed") else "unchanged"),
        ("dependencies", "installed" if data.get("installed") else "unchanged"),
        ("repo", data.get("repo")),
    ]))
