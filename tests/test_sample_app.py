"""The sample app started the way the README says, in a fresh copy: mail flows to the local smarthost."""

from __future__ import annotations

import mailbox
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


from salmon_relayauth.cli.probe import probe

ROOT = Path(__file__).resolve().parent.parent  # the repository


def first_readme_command() -> str:
    text = (ROOT / "README.md").read_text()
    command = re.findall(r"```sh\n(.+?)\n```", text)[0]
    _, _, run = command.partition("cd sample_app && ")
    assert run, f"the README's first command no longer starts the sample app: {command}"
    return run


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


def test_newcomer_runs_the_sample_and_mail_flows(tmp_path: Path) -> None:
    app = tmp_path / "sample_app"
    shutil.copytree(ROOT / "sample_app", app, ignore=shutil.ignore_patterns("run", "logs", "__pycache__"))
    venv_bin = str(Path(sys.executable).parent) + "/"
    command = shlex.split(first_readme_command().replace("../.venv/bin/", venv_bin))
    process = subprocess.Popen(command, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(2525)
        allowed = probe(("127.0.0.1", 2525), "127.0.0.10", "chris@contoso.com", "kate@fabrikam.com")
        assert allowed.relayed, allowed.transcript
        assert allowed.transcript[-3][1].endswith("Queued mail for delivery")
        refused = probe(("127.0.0.1", 2525), "127.0.0.20", "chris@contoso.com", "kate@fabrikam.com")
        assert (refused.refused_at, refused.refusal) == ("RCPT TO", "550 5.7.1 Unable to relay")
        deadline = time.monotonic() + 20
        stored: list[mailbox.MaildirMessage] = []
        while time.monotonic() < deadline and not stored:
            time.sleep(0.1)
            maildir = app / "run" / "smarthost"
            if maildir.exists():
                box = mailbox.Maildir(maildir, create=False)
                stored = [box.get_message(key) for key in box.keys()]
        assert len(stored) == 1
        assert stored[0]["X-Envelope-To"] == "kate@fabrikam.com"
        assert stored[0]["Subject"] == "Test"
        assert "audit" in (app / "logs" / "relay.log").read_text()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
