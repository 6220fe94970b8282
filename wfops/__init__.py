"""wfops: run ML experiments on rented GPU pods with Invoke tasks.

The module map: one line per package and module (tests/unit/test_layout.py checks that it names every one of
them and nothing that is gone). Data flows one way: options + workflow.env -> settings -> target(s) -> a pure
plan -> one rendered script in one exec on the pod, where the agent does the work -> a JSON answer -> a table.

    __main__.py               `python -m wfops`: the console script
    cli.py                    the `wfops` console script, light on purpose (lean, prewarm first, then the task tree)
    lean.py                   a read-only command (or run.fetch) with its keeper warm, without invoke or the task tree
    leancache.py              the lean entry's cached fast path: the kept request when every input is unchanged
    leanfetch.py              the cached fast path of a repeated run.fetch: the pod's plan alone, nothing to copy
    leanpods.py               the lean entry's work on pods: the request, the session, a fleet's reads at once
    program.py                the `wfops` program: invoke's Program over the same task tree as `inv`
    prewarm.py                start the target's keeper before the task tree is imported
    errors.py                 typed errors (WfopsError and kin) and the exit-code table
    hints.py                  the next-step commands wfops prints, as they paste: the program as run, its -c
    interrupt.py              Ctrl-C outside a task's boundary (imports, parsing): one line and exit 130
    startup.py                what a command starts in: stdout closed, its directory gone (one line); streams' encoding
    quietpipe.py              a reader of stdout gone (`... | head`): exit 141, no traceback (`inv --help` too, by .pth)
    output.py                 tables, durations and JSON for the user; control characters made visible
    views.py                  the human text of read-only commands' answers (the tasks' and the lean entry's)
    watch.py                  `--watch`: refresh a status over one connection until the thing watched ends
    tracked.py                tracked tasks: id rules, the command.sh text, final state -> exit code
    preparation.py            bootstrap/checkout planned in pure Python from one probe of the pod ("facts")
    fanout.py                 run one callable on N pods at once -> a GroupResult (a value or an error per pod)
    settings/                 workflow.env -> typed, validated settings
    settings/keys.py          the KEYS table: each key's default, check, meaning, group, whether it reaches the pod
    settings/checks.py        the checks keys use: text -> typed value, or what was expected
    settings/model.py         Settings: one typed attribute per key; raw text via raw() / extras
    settings/load.py          find the dotenv file, parse it, expand ${}, check every key -> Settings
    settings/secrets.py       which keys are secret; redaction and masking
    settings/example.py       workflow.env.example from the table (`python -m wfops.settings`)
    settings/__main__.py      `python -m wfops.settings > workflow.env.example`
    targets/                  which pod(s) a command talks to, and the providers behind them
    targets/target.py         the typed Target (provider, name, address, user, key, pin) and Member (a named pod)
    targets/resolve.py        THE one way from settings to a command's pod(s): pods, is_fleet, one, target
    targets/providers/        providers routed by name (resolve, describe; Lium also rents and removes)
    targets/providers/base.py  the one small interface of a provider, and Resolved (a Target, or why none yet)
    targets/providers/lium.py  Lium pods: resolve through lium_pods, rent (pod.up) and remove (pod.down, Ctrl-C)
    targets/providers/ssh.py  an ssh_config alias or user@host[:port] (OPS_DEFAULT_HOST, OPS_HOSTS)
    targets/providers/local.py  `local`: this machine, no SSH
    targets/lium_pods.py      a Lium pod's name -> one `lium ps` -> a direct SSH connection, cache, host-key pin
    targets/lium_cli.py       the one place the `lium` CLI runs, and its errors
    targets/lium_rows.py      what `lium ps` rows mean (pure): the pod a name selects, ssh_cmd, pins, `lium up` argv
    targets/replaced.py       the pod a config's name reaches after a managed sweep replaced it (name -> pod id)
    targets/ssh_config.py     pod.ssh-config's Host blocks and the files they go in
    transport/                one connection per command, one exec per script, rendered scripts
    transport/session.py      what every session shares: Session, ExecResult, Redactor, the stderr protocol
    transport/connect.py      open_session (the factory of sessions) and the session through a warm keeper
    transport/requestline.py  the agent's request line after the script (light: the cached fast paths build it)
    transport/leanwire.py     the cached fast path's keeper exchange (stdlib frames, the pod's lines, the answer)
    transport/leanexec.py     the lean entry's session: one script through a keeper that answers, else Fallback
    transport/ssh.py          THE SSH connection factory, its keepalive, SSHLink and the SSH session
    transport/sshconf.py      where an SSH target's connection goes: ssh_config applied as Fabric applied it
    transport/hostkeys.py     host keys of SSH hosts: the first key seen pinned, a changed one refused
    transport/local.py        the `local` target's session: `bash -s` on this machine
    transport/warm.py         warm connections, client side: find or start a keeper
    transport/keeperdir.py    where this user's keepers live (stdlib os only)
    transport/frames.py       the frames between a command and its keeper (stdlib only: the cached fast path's too)
    transport/keeper.py       the keeper process: holds each target's connection open between commands
    transport/served.py       one target of the keeper process: its connection, socket, clients, idle clock
    transport/podserver.py    the agent a keeper keeps alive on its pod for reads: started, asked, ended with it
    transport/hub.py          the keeper process's targets: adds, drops and ends them; exits when none is left
    transport/launch.py       starting the keeper process, client side: add a target to it, or start it
    transport/command.py      PodCommand: one command against one pod, agent requests over one session
    transport/render.py       the Jinja environment, the rendered-script cache, the agent tarball
    transport/shell.py        shell quoting for every value that enters a script
    transport/rules.py        the workflow rules, client side: a command's rule, state parsing
    transport/attach.py       an interactive terminal on the pod's tmux session (sweep.attach, task.attach)
    sweeps/                   sweeps, client side
    sweeps/model.py           sweep CSV -> validated run specs, filters, a run's training command
    sweeps/args.py            overrides as the script takes them: THE one rule (key=value, --flag, --key value)
    sweeps/plan.py            a fleet sweep's spread over pods, moves of runs not started, joined tables
    sweeps/ledger.py          the ledger of a fleet sweep on this machine (which run went to which pod)
    sweeps/billing.py         each pod's price, the billing block sweep.start sends, the cost lines shown
    sweeps/fleet_pods.py      one sweep over a fleet: a session per pod, an agent command on each at once
    sweeps/fleet_start.py     ... its start: spread, rendezvous check, each pod's share, the ledger
    sweeps/fleet_status.py    ... what is seen: the joined status, the metrics of every pod, sweep.wait
    sweeps/fleet_moves.py     ... the moves: sweep.rebalance, sweep.add and sweep.retry on a fleet
    sweeps/fleet_copies.py    ... the copies of a run: strays of a returned pod, duplicates (`ran on A and B`)
    sweeps/fleet_fetch.py     ... run.fetch with no usable ledger: which copy of a run that ran twice is fetched
    sweeps/recover.py         a managed sweep's record: pods it rented, recoveries spent, pod history; when lost
    sweeps/history.py         a managed sweep's pod history as sweep.status shows it (stdlib: the lean fast path)
    sweeps/metrics.py         metric columns, best values and the rows of results.csv
    sweeps/curves.py          sweep.report's curves.png: the panels (pure), their order, markers, then the figure
    sweeps/launch_script.py   each run's launch script (command.sh) rendered from the run template
    sweeps/status.py          the text of sweep.status and sweep.wait: the run table and the totals line
    artifacts/                bringing run directories home (run.fetch)
    artifacts/transfer.py     run.fetch: what to ask for and the one exec that streams it
    artifacts/fetch.py        receiving the tar stream: an extractor process that places file by file
    artifacts/index.py        what this machine has of fetched runs: the index run.fetch sends
    artifacts/staging.py      the fetches' staging folders: claimed under an flock, swept when abandoned
    artifacts/summary.py      what a fetch tells the user: its summary line and the run folders (light imports)
    tasks/                    the invoke task tree: thin adapters (options -> the layer below -> output, exit)
    tasks/_base.py            what every task shares: the error boundary, option checks, settings, output
    tasks/_parsing.py         invoke's command line, for wfops and inv: optional positionals, did you mean, pipes
    tasks/config.py           config.show
    tasks/connection.py       disconnect: close warm connections now
    tasks/fsm.py              fsm.status and fsm.reset
    tasks/pod.py              pod.up / down / status / wait / ssh-config (Lium and SSH pods)
    tasks/pod_text.py         what pod.status / up / down print for people
    tasks/prep.py             bootstrap and checkout
    tasks/task.py             task.run / status / wait / list (logs and attach from results.py): tracked tasks
    tasks/sweep.py            sweep.start / add / retry / status / stop / list / rebalance
    tasks/sweep_csv.py        sweep.template / validate: the CSV here, without the pod (`--csv -`: stdout / stdin)
    tasks/results.py          sweep.report / wait / attach, run.logs, task.logs / attach: what one looks at
    tasks/run.py              run.fetch (and run.logs from results.py)
    tasks/managed.py          sweep.wait --recover / --down-when-done: replace lost pods, restart their runs
    tasks/managed_down.py     --down-when-done: fetch every run, then remove the pods the sweep rented
    agent/                    the pod agent: the whole pod side, standard library only, Python >= 3.8
    agent/__main__.py         its entry point: one JSON request on stdin, checked, dispatched, answered
    agent/serve.py            the agent kept alive by a keeper (--serve): each read run by a forked child
    agent/filecache.py        what the kept agent remembers of files its reads parsed (by stat identity)
    agent/registry.py         the command registry: a handler's signature declares its arguments
    agent/wire.py             THE wire: command names, TypedDicts of request/manifest/answers, the door's checker
    agent/states.py           THE vocabulary: states, failure classes, workflow rules, exit codes, pod layout
    agent/store.py            files on the pod: atomic JSON writes, locks, the one validating loader
    agent/procs.py            process ownership and liveness: subreaper, owner marks, tree kill, pidfd waits
    agent/workflow.py         the workflow gate every command passes, transitions, config sync
    agent/steps.py            running bootstrap/checkout steps with progress on stderr
    agent/prepare.py          bootstrap and checkout-apply on the pod
    agent/facts.py            read-only facts: the checkout probe, pod.status checks
    agent/data.py             checkout's data step: DATA_CHECK in DATA_DIR, DATA_PREPARE_CMD, linking it in the workdir
    agent/tasks.py            tracked tasks: a command in its own tmux window, supervised
    agent/supervisor.py       one run or task, supervised: start, log, timeout, stall, final sync
    agent/forkrun.py          the queue forks each run's supervisor (no Python start a run)
    agent/outcome.py          how a run ended, in words a researcher can act on
    agent/runnotes.py         a run's summary beyond its end: files it wrote into the checkout, the CPU launcher hint
    agent/launch.py           how the agent starts itself again (runner, scheduler, supervisor)
    agent/runscript.py        a run's rendered launch script: run-time values filled in, quoted, on the pod
    agent/runs.py             one run of a sweep: its directories, attempts and exact command
    agent/resume.py           a later attempt resumes from its checkpoint: RESUME_WHEN found -> RESUME_ARGS
    agent/cost.py             what a sweep costs on the pod: attempts' shares of the price, idle, the budget
    agent/argv.py             TRAIN_SCRIPT as argv words, the run's placeholders ({out_dir}...) and their expansion
    agent/slots.py            GPU slots and the order runs start in (pure)
    agent/scheduler.py        the sweep queue: slots, order, skip, retries, stop
    agent/queuelog.py         the sweep queue's log: its tmux window and _manifests/<sweep>.log
    agent/sweeps.py           sweeps on the pod: start, the status table, stop
    agent/rows.py             a sweep's run rows (sweep.status, sweep.list, the queue's end) and their totals
    agent/sweeplist.py        the sweeps a pod has had (sweep.list)
    agent/sweepedit.py        live edits of the current sweep: sweep.add, sweep.retry
    agent/addtokens.py        a fleet sweep.add's token: applied once, or abandoned first and then refused
    agent/recover.py          sweep-recover: a lost pod's runs again, lost ones as their next attempt (same dir)
    agent/fleet.py            this pod's part in a fleet sweep: facts, its share, node placement
    agent/netcheck.py         the reachability check before a multi-node run
    agent/metrics.py          a run's metrics from its metrics.jsonl (or its log)
    agent/presets.py          named metric presets (nanogpt, pytorch-examples, json, kv) beside METRIC_PATTERNS
    agent/results.py          what a sweep produced: sweep-metrics for sweep.report
    agent/logs.py             live logs of a run or task over the one connection
    agent/fetching.py         what run.fetch sends: the files the client lacks or has in another version
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

def keep_bytecode() -> None:
    """`inv` turns off bytecode writing (for the user's tasks.py) before it imports the tasks, and so wfops' own
    modules were compiled afresh on every call when run from a checkout. Unless the user asked for that too
    (PYTHONDONTWRITEBYTECODE, python -B), Python's bytecode cache stays on for wfops. Called here and again by
    the task tree (wfops.tasks): under `inv` this package may already be imported at interpreter start, before
    invoke's choice (the wheel's wfops_quiet_pipe.pth imports wfops.quietpipe)."""
    asked = _os.environ.get("PYTHONDONTWRITEBYTECODE") or _sys.flags.dont_write_bytecode
    if _sys.dont_write_bytecode and not asked:
        _sys.dont_write_bytecode = False


keep_bytecode()
