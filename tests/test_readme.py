"""The README's commands stay true: every ``vqspeech ...`` line names a real command and real options.

Running them all would take the demo's ten minutes; what goes stale in practice is a renamed
option or command, and that is what this checks, against each command's own ``--help``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vqspeech_cli.main import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _bash_lines(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash" if not inside else False
            continue
        if inside and line.strip():
            lines.append(line.strip())
    return lines


def _invocations() -> list[list[str]]:
    """Each README shell line's vqspeech argument list (after ``vqspeech`` or ``-m vqspeech_cli.main``)."""
    found = []
    for line in _bash_lines(README.read_text()):
        for part in re.split(r"\s[|;]\s|\s&&\s", line):
            words = shlex.split(part, comments=True)
            for i, word in enumerate(words):
                if word in ("vqspeech", ".venv/bin/vqspeech", "vqspeech_cli.main"):
                    found.append(words[i + 1 :])
                    break
    return found


INVOCATIONS = _invocations()


def _help(path: list[str]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, f"vqspeech {' '.join(path)} --help failed:\n{result.output}"
    return result.output


def _command_path(args: list[str]) -> list[str]:
    """The longest prefix of non-option words that is a (sub)command."""
    path: list[str] = []
    for word in args:
        if word.startswith("-"):
            break
        candidate = [*path, word]
        if CliRunner().invoke(app, [*candidate, "--help"]).exit_code != 0:
            break
        path = candidate
        if "Commands" not in _help(path):  # a leaf command: the next words are its arguments
            break
    return path


def test_the_readme_has_commands_to_check() -> None:
    assert len(INVOCATIONS) >= 15
    quick_start = README.read_text().split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    scripts = re.findall(r"^bash (\S+)", quick_start, flags=re.MULTILINE)
    assert scripts == ["scripts/demo.sh", "scripts/test.sh"]  # the two set-up commands
    assert all((ROOT / script).is_file() for script in scripts)


@pytest.mark.parametrize("args", INVOCATIONS, ids=[" ".join(a)[:60] for a in INVOCATIONS])
def test_readme_command_and_options_exist(args: list[str]) -> None:
    if args[:1] == ["--help"]:
        return
    path = _command_path(args)
    assert path, f"'vqspeech {' '.join(args)}': no such command"
    text = _help(path)
    for word in args[len(path) :]:
        if word.startswith("-") and word not in ("-", "--"):
            option = word.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
                f"README uses {option} with 'vqspeech {' '.join(path)}', which does not take it"
            )
