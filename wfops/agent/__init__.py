"""The wfops pod agent: the whole pod side, standard library only, Python >= 3.8.

Shipped to the pod as `OPS_REMOTE_OUTPUTS_DIR/_control/agent/<content hash>/wfops_agent/` and run with the
pod's system python as `python3 -I -S` (see launch.CALL). The client imports it as `wfops.agent` for the
one vocabulary in states.py.

    states      run/task/workflow states, the rule of every command, exit codes, the pod layout
    store       atomic JSON writes, directory locks, the one validating JSON loader
    procs       process ownership (subreaper, tree kill, owner marks), liveness, pidfd waits
    registry    the command registry: a handler's signature declares its arguments
    workflow    the state gate, transitions from the rule table, the config sync
    supervisor  one run or task: log stamping, timeout, local_sync, ending every process it started
    outcome     failure classes and summary.json
    tasks       tracked tasks (start, show, wait, list)
    sweeps      sweep start, status, stop
    rows        a sweep's run rows and their totals, the rows an ended sweep keeps
    fetching    what run.fetch sends: the files the client lacks or has in another version
    scheduler   the sweep queue
    facts       what checkout and pod.status need to know about the pod
    fleet       a sweep over several pods: this pod's slots and load, withdrawing runs that have not started
    netcheck    the reachability check before a multi-node run (listen here, probe from the other pods)
    prepare     bootstrap and the checkout steps
    steps       running those steps: children, notes, failures, env wrappers, git credentials out of argv
    launch      starting the agent again (runners, queue) and tmux windows
    __main__    the entry point
"""
