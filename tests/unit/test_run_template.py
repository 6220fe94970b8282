"""A run's launch script from a template (wfops/sweeps/launch_script.py renders, wfops/agent/runscript.py fills in
the run-time values): the shipped template writes the command.sh of wfops before templates byte for byte, hostile
values stay quoted in a user's template, and a template error is one line."""

from __future__ import annotations

import csv
import io
import json
import shlex
import subprocess
from pathlib import Path

import pytest

from tests import realparts
from wfops.agent import runs, runscript
from wfops.agent.states import Layout
from wfops.errors import UsageError
from wfops.settings.load import parse_settings
from wfops.sweeps import launch_script
from wfops.sweeps.model import parse_csv, queue_entries
from wfops.transport.render import templates_dir

GOLDEN = json.loads((Path(__file__).parent / "data" / "command_sh_before_template.json").read_text())
POD = Layout.from_dict(GOLDEN["pod"])
HOSTILE = ["$(touch {pwned})", "`touch {pwned}`", "it's \"q\"", "a;b | c", "line1\nline2; touch {pwned}", "$HOME",
           "@wfops-0000000000000000:launcher@"]


def _settings(folder: Path, text: str = ""):
    path = folder / "workflow.env"
    path.write_text(text)
    return parse_settings(text, environ={}, path=path)


def _filled(script: dict | None, case: dict) -> str:
    run = dict(case["run"], **({"script": script} if script else {}))
    how = runs.Launch(case["ex"], GOLDEN["python"], run, case["place"])
    run_dir = POD.run_dir(run["run_id"])
    return runscript.command_text(how, POD, GOLDEN["sweep_id"], how.argv(case["out_dir"], run_dir), run_dir,
                                  case["out_dir"])


def _csv_row(case: dict) -> str:
    run = case["run"]
    rid, config, seed = run["run_id"].split(".node")[0], run["config"], run["seed"] or 0
    return f'run_id,config,seed\n{rid},"{config}",{seed}\n'


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_the_shipped_template_writes_the_command_sh_of_before_byte_for_byte(case, tmp_path):
    """Captured from runs.Launch before the template existed (tests/unit/data/command_sh_before_template.json)."""
    settings = _settings(tmp_path)
    spec = parse_csv(_csv_row(case))
    script = launch_script.scripts(settings, spec)[spec[0].run_id]
    assert script["source"] == "wfops run_command.sh.j2"
    assert _filled(script, case) == case["command_sh"]
    assert _filled(None, case) == case["command_sh"]  # an entry queued by an older wfops: the agent's DEFAULT


def test_the_agent_default_is_what_the_shipped_template_renders(tmp_path):
    script = launch_script.scripts(_settings(tmp_path), parse_csv("run_id,config,seed\nr1,c.py,1\n"))["r1"]
    assert script["text"].replace(script["mark"], runscript.DEFAULT_MARK) == runscript.DEFAULT


def test_the_filled_command_sh_parses_and_passes_shellcheck(tmp_path):
    shellcheck = realparts.need("shellcheck", "apt-get install shellcheck")
    for case in GOLDEN["cases"]:
        path = tmp_path / f"{case['name']}.sh"
        path.write_text(case["command_sh"])
        assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
        res = subprocess.run([shellcheck, "-s", "bash", "-S", "warning", "-e", "SC1090,SC1091", str(path)],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


USER_TEMPLATE = """\
#!/usr/bin/env bash
out={{ rt.out_dir }}
printf '%s\\n' {{ run_id }} {{ config | q }} {% for k, v in overrides %}{{ k }}={{ v }} {% endfor %} > "$out/seen"
printf '%s\\n' {{ rt.name }} {{ rt.attempt }} {{ rt.devices }} {{ rt.port }} > "$out/runtime"
"""


def test_hostile_values_stay_one_quoted_word_in_a_users_template(tmp_path):
    """A template beside workflow.env prints the CSV's values, with and without `| q`: each arrives verbatim as
    one word, and nothing in them runs (nor a value that spells a run-time marker)."""
    pwned = tmp_path / "pwned"
    values = [h.format(pwned=pwned) for h in HOSTILE]
    (tmp_path / "run_command.sh.j2").write_text(USER_TEMPLATE)
    settings = _settings(tmp_path)
    row = " ".join(f"k{i}={shlex.quote(v)}" for i, v in enumerate(values))
    text = io.StringIO()
    csv.writer(text).writerows([["run_id", "config", "seed", "overrides"], ["r1", "con fig's.py", "1", row]])
    spec = parse_csv(text.getvalue())
    assert [o.value() for o in spec[0].overrides] == values
    entry = queue_entries(settings, spec, "g", launch_script.scripts(settings, spec))[0]
    assert entry["script"]["source"] == str(tmp_path / "run_command.sh.j2")
    case = dict(GOLDEN["cases"][0], out_dir=str(tmp_path), run=dict(entry, args=[]))
    (tmp_path / "cmd.sh").write_text(_filled(entry["script"], case))
    res = subprocess.run(["bash", str(tmp_path / "cmd.sh")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    seen = (tmp_path / "seen").read_text()
    assert seen == "\n".join(["r1", "con fig's.py", *(f"k{i}={v}" for i, v in enumerate(values))]) + "\n"
    assert (tmp_path / "runtime").read_text() == "r1\n1\n0\n29500\n"
    assert not pwned.exists()


def _error(tmp_path: Path, template: str | bytes, name: str = "run_command.sh.j2", config: str = "") -> str:
    path = tmp_path / name
    path.write_bytes(template if isinstance(template, bytes) else template.encode())
    with pytest.raises(UsageError) as exc:
        launch_script.scripts(_settings(tmp_path, config), parse_csv("run_id,config,seed\nr1,c.py,1\n"))
    assert exc.value.code == 2
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize(("template", "says"), [
    ("#!/bin/bash\n{% if %}\nexec {{ rt.launcher }}\n", ":2: Expected an expression"),
    ("#!/bin/bash\n\nexport X={{ no_such_thing }}\n", ":3: 'no_such_thing' is undefined"),
    ("#!/bin/bash\nexec {{ rt.no_such_value }}\n", ":2: 'dict object' has no attribute 'no_such_value'"),
    ("#!/bin/bash\nexec {{ rt.run_dir ~ '/x' }}\n", ":2: a run-time value ({{ rt.NAME }}) must stand alone"),
    ("#!/bin/bash\n{% set x = seed + 'x' %}\n", ":2: TypeError: unsupported operand"),
    (b"#!/bin/bash\n\xff\n", ": it is not UTF-8 text"),
])
def test_a_template_error_is_one_line_with_where(template, says, tmp_path):
    message = _error(tmp_path, template)
    assert message.startswith(f"run template {tmp_path / 'run_command.sh.j2'}")
    assert says in message
    assert message.endswith("; nothing was started (RUN_TEMPLATE, docs/sweeps.md: Launch script)")


def test_run_template_names_the_file_and_a_missing_one_is_one_line(tmp_path):
    message = _error(tmp_path, "ignored {{", config=f"RUN_TEMPLATE={tmp_path / 'nope.j2'}\n")
    assert message.startswith(f"run template {tmp_path / 'nope.j2'}: cannot read it: No such file or directory")
    (tmp_path / "mine.j2").write_text("#!/bin/bash\nexec {{ rt.launcher }}\n")
    settings = _settings(tmp_path, f"RUN_TEMPLATE={tmp_path / 'mine.j2'}\n")
    script = launch_script.scripts(settings, parse_csv("run_id,config,seed\nr1,c.py,1\n"))["r1"]
    assert script["source"] == str(tmp_path / "mine.j2")
    assert script["text"] == f"#!/bin/bash\nexec @wfops-{script['mark']}:launcher@\n"


def test_the_agent_refuses_a_script_it_cannot_fill():
    assert runscript.problem(None) == ""
    assert runscript.problem({"text": "x", "mark": "0123456789abcdef"}) == ""
    assert "16-hex-digit" in runscript.problem({"text": "x", "mark": "zz"})
    assert runscript.problem({"text": "@wfops-0123456789abcdef:nope@", "mark": "0123456789abcdef"}) == (
        "its launch script names unknown run-time value(s): nope")


def test_the_shipped_template_is_in_remote_templates():
    assert (templates_dir() / launch_script.TEMPLATE_NAME).is_file()


def _hostile_row(tmp_path: Path) -> list:
    """One run whose override holds a newline, then a command, then a comment: harmless as one quoted word,
    but it runs wherever the quoting of its word does not hold."""
    value = f"a\n touch {tmp_path / 'pwned'} #"
    text = io.StringIO()
    rows = [["run_id", "config", "seed", "overrides"], ["r1", "c.py", "1", f"k={shlex.quote(value)}"]]
    csv.writer(text).writerows(rows)
    return parse_csv(text.getvalue())


@pytest.mark.parametrize(("body", "where"), [
    ("# overrides: {% for k, v in overrides %}{{ v }}{% endfor %}\n", "inside a comment"),
    ("# {{ rt.launcher }}\n", "inside a comment"),
    ('echo "{% for k, v in overrides %}{{ v }}{% endfor %}"\n', "inside double quotes"),
    ("echo '{{ overrides[0][1] }}'\n", "inside single quotes"),
    ("echo `echo {{ overrides[0][1] }}`\n", "inside backquotes"),
    ("echo ${X:-{{ overrides[0][1] }}}\n", "inside a ${...}"),
    ('echo "{{ rt.run_dir }}"\n', "inside double quotes"),  # a pod path may need quoting
    ("cat <<EOF\n{% for k, v in overrides %}{{ v }}{% endfor %}\nEOF\n", "line 3 of the script it renders for "
     "run r1 has a {{ ... }} value that needs quoting inside a here-document"),
    ("cat <<'EOF' >x.yaml\nlr: {{ overrides[0][1] }}\nEOF\n", "line 3 of the script it renders for run r1 has a "
     "{{ ... }} value that needs quoting inside a here-document"),
])
def test_a_value_where_its_quoting_does_not_hold_is_one_line_and_nothing_runs(body, where, tmp_path):
    """Each `{{ }}` is one quoted word, but quotes, comments and here-documents of the template's own undo that
    (a newline ends a comment, `$(...)` runs inside double quotes): such a template is refused, not rendered."""
    (tmp_path / "run_command.sh.j2").write_text("#!/usr/bin/env bash\n" + body + "exec {{ rt.launcher }}\n")
    with pytest.raises(UsageError) as exc:
        launch_script.scripts(_settings(tmp_path), _hostile_row(tmp_path))
    message = str(exc.value)
    assert "\n" not in message and exc.value.code == 2
    assert message.startswith(f"run template {tmp_path / 'run_command.sh.j2'}: line ")
    assert ("line 3" in where) or "line 2 of the script it renders for run r1 has a {{ ... }} value that needs " \
        "quoting inside" in message
    assert where in message
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("body", [
    "x=$(echo {{ run_id }})\necho \"$(echo {{ config }})\" # {{ rt.name }} of {{ run_id }}\n( echo {{ config }} )\n",
    "cat <<'EOF' >notes\nliteral $x and 'quotes\nEOF\necho {{ config }} x#{{ run_id }} $((1 + 2))\n",
    "cat <<-EOF\n\thi\n\tEOF\necho a\\\"{{ config }} 'it''s' # a comment ' \"\n",
    "exec nsys profile -o {{ rt.run_dir }}/profile {{ rt.launcher }}\n",
    "cat <<< {{ config }}\necho {{ run_id }}\n",  # a here-string is no here-document
    # a value no quoting changes is the same inside quotes, a comment or a here-document: allowed there
    "export WANDB_NAME=\"{{ run_id }}\" X='{{ seed }}' # {{ overrides[0][0] }}\n"
    "echo \"{{ rt.name }}/{{ rt.attempt }}\"\n"
    "cat <<EOF\n{{ config }} {{ rt.node_rank }}\nEOF\n",
])
def test_values_outside_quotes_still_render_around_comments_quotes_and_heredocs(body, tmp_path):
    (tmp_path / "run_command.sh.j2").write_text("#!/usr/bin/env bash\n" + body)
    script = launch_script.scripts(_settings(tmp_path), _hostile_row(tmp_path))["r1"]
    assert "\ue000" not in script["text"] and "\ue001" not in script["text"]
    subprocess.run(["bash", "-n"], input=script["text"], text=True, check=True)


def test_a_template_that_is_no_regular_file_or_too_big_is_one_line_and_a_bom_is_dropped(tmp_path):
    import os
    import threading

    fifo = tmp_path / "fifo.j2"
    os.mkfifo(fifo)
    got: list[str] = []

    def render() -> None:  # before: reading the FIFO blocked for ever
        got.append(_error(tmp_path / "sub", "", config=f"RUN_TEMPLATE={fifo}\n"))

    (tmp_path / "sub").mkdir()
    worker = threading.Thread(target=render, daemon=True)
    worker.start()
    worker.join(20)
    assert got and got[0].startswith(f"run template {fifo}: it is not a regular file;")
    big = tmp_path / "big.j2"
    big.write_text("#!/bin/bash\n" + "#" * launch_script.MAX_TEMPLATE + "\n")
    assert f"a run template may have {launch_script.MAX_TEMPLATE:,}" in _error(
        tmp_path / "sub", "", config=f"RUN_TEMPLATE={big}\n")
    (tmp_path / "run_command.sh.j2").write_bytes(b"\xef\xbb\xbf#!/usr/bin/env bash\nexec {{ rt.launcher }}\n")
    script = launch_script.scripts(_settings(tmp_path), parse_csv("run_id,config,seed\nr1,c.py,1\n"))["r1"]
    assert script["text"].startswith("#!/usr/bin/env bash\n")  # a BOM before #! would be a command of its own


@pytest.mark.parametrize("body", [
    "export LEAK={{ lipsum.__globals__['os'].environ['WFT_SECRET_TOKEN'] }}\n",
    "export LEAK={{ cycler.__init__.__globals__.os.environ['WFT_SECRET_TOKEN'] }}\n",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}\n",
])
def test_a_template_cannot_reach_this_machines_python(body, tmp_path, monkeypatch):
    """The template sees its values, not this machine: before, Jinja's globals led to os.environ (a token of
    the shell went into command.sh, the manifest and the pod) and to any code. Now a sandbox: one line."""
    monkeypatch.setenv("WFT_SECRET_TOKEN", "tok-sekrit-123456")
    message = _error(tmp_path, "#!/usr/bin/env bash\n" + body)
    assert ":2: access to attribute" in message and "is unsafe" in message, message
    assert "tok-sekrit-123456" not in message
