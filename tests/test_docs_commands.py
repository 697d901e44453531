"""Every ``luigi --module tasks ...`` command in README.md and docs/*.md is one luigi's own
command-line parser accepts, and every value it writes for the root task reaches the task.

luigi parses a command line with argparse, which takes an unknown ``--flag`` for an
abbreviation of a longer one: ``--ema`` matches luigi's ``--email-*`` flags and stops the
command ("ambiguous option"). And luigi drops an empty value (``--augment ''``), so the
task silently keeps its default. Both reached the README once; this test parses each
command as the ``luigi`` script does (with the modules it imports loaded).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import luigi
import luigi.cmdline  # noqa: F401  (registers what the luigi script's parser knows: email, scheduler, ...)
import pytest
from luigi.cmdline_parser import CmdlineParser

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"(?:^|[\s(`$])luigi (--module tasks\s.*)")
#: Where a shell command ends on a line: a comment, a pipe, a list or a redirection; and
#: where the docs elide the rest of one ("...", "(same data options)").
SHELL_END = {"#", "|", "||", "&&", ";", ">", "2>&1", "&", "..."}


def documented_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv after "luigi")`` of each documented command (continuation lines joined)."""
    out = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            follow = number
            while line.endswith("\\") and follow < len(lines):  # a command continued on the next line
                line = line[:-1] + " " + lines[follow]
                follow += 1
            match = COMMAND.search(line)
            if not match:
                continue
            command = match.group(1).split("`", 1)[0]  # inline code ends at its backquote
            words = []
            for word in shlex.split(command, comments=True):
                if word in SHELL_END or word.startswith("("):
                    break
                words.append(word)
            # not: a worker that asks luigid for its tasks, or a mention with no task ("luigi --module tasks ...")
            if "--assistant" not in words and len(words) > 2 and not words[2].startswith("-"):
                out.append((f"{page.relative_to(ROOT)}:{number}", words))
    return out


COMMANDS = documented_commands()


def test_the_docs_hold_commands():
    assert len(COMMANDS) > 50, len(COMMANDS)  # the pattern still finds them


@pytest.mark.parametrize("argv", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_a_documented_command_parses_and_sets_what_it_writes(argv, capsys):
    import tasks  # noqa: F401

    if {"--help", "--help-all"} & set(argv):
        with pytest.raises(SystemExit) as exit_:
            CmdlineParser(argv)
        assert exit_.value.code in (0, None), capsys.readouterr().err
        return
    root = argv[argv.index("--module") + 2]
    try:
        with CmdlineParser.global_instance(argv) as parser:
            task_cls = parser._get_task_cls()
            given = parser._get_task_kwargs()
            flags = written(argv, root, dict(task_cls.get_params()))
            # what the task would get (it is not built: a documented run folder is a placeholder)
            got = {name: given[name] if name in given else param.task_value(root, name) for name, param, _ in flags}
    except SystemExit:
        pytest.fail(f"luigi refuses `luigi {' '.join(argv)}`: {capsys.readouterr().err.strip()}")
    assert task_cls.get_task_family() == root
    for name, param, value in flags:
        assert value != "", f"--{name} '': luigi drops an empty value (the task keeps its default)"
        assert param.serialize(param.normalize(got[name])) == param.serialize(param.normalize(param.parse(value))), \
            (name, value, got[name])


def written(argv: list[str], root: str, params: dict) -> list[tuple[str, luigi.Parameter, str]]:
    """``(name, parameter, value as written)`` of each flag of ``argv`` that sets a parameter
    of the root task (``--name v``, ``--name=v`` or ``--Root-name v``; switches left out)."""
    out, i = [], argv.index(root) + 1
    while i < len(argv):
        flag = argv[i]
        i += 1
        if not flag.startswith("--"):
            continue
        flag, inline, value = flag[2:].partition("=")
        name = flag.replace("-", "_")
        if name.startswith(root + "_"):
            name = name[len(root) + 1:]
        if name not in params:
            continue  # another task's or a config class' flag
        if isinstance(params[name], luigi.BoolParameter) and not inline:
            continue  # a switch: no value follows
        if not inline:
            value = argv[i] if i < len(argv) else ""
            i += 1
        out.append((name, params[name], value))
    return out
