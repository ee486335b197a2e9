"""Project hygiene that CI relies on: the README's commands and .ci/run stay in step."""

from __future__ import annotations

from pathlib import Path

import re
import subprocess
import sys

ROOT = Path(__file__).resolve().parent.parent  # the repository



def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_opens_with_two_setup_commands() -> None:
    commands = readme_commands()
    assert len(commands) >= 2
    run_sample, run_tests = commands[0], commands[1]
    assert "salmon start" in run_sample and "cd sample_app" in run_sample
    assert "pytest" in run_tests


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_sample_configuration_is_valid() -> None:
    """The sample app's configuration passes every check, the open-relay check included."""
    result = subprocess.run(
        [sys.executable, "-m", "salmon_relayauth", "check", str(ROOT / "sample_app" / "config" / "relay.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Anonymous Relay" in result.stdout
