"""Postfix for the benchmark: installing the Debian package when needed, and a private instance
(its own configuration and queue directories under a temporary directory) configured as an
anonymous relay for 127.0.0.0/8 to the smarthost, started with ``postfix -c DIR start``."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import time
from pathlib import Path

from .common import SBIN_PATH, which

INSTALL_COMMAND = "apt-get install -y postfix"


def ensure_tools(install: bool) -> tuple[bool, str]:
    """Make sure ``postfix``, ``smtp-source`` and ``smtp-sink`` exist; ``(ok, note)``.

    As root, with ``install``, a missing Postfix is installed from the Debian package with
    debconf's "No configuration" (the system instance stays unconfigured and stopped)."""
    if all(which(name) for name in ("postfix", "smtp-source", "smtp-sink")):
        return True, "present"
    if not install:
        return False, "not installed (--no-install)"
    if os.geteuid() != 0:
        return False, f"not installed, and not running as root to '{INSTALL_COMMAND}'"
    if not (which("apt-get") and which("debconf-set-selections")):
        return False, "not installed, and this is not a Debian system (no apt-get / debconf-set-selections)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", PATH=os.environ.get("PATH", "") + ":" + SBIN_PATH)
    selections = "postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run(["debconf-set-selections"], input=selections, text=True, env=env, check=False)
    install_cmd = ["apt-get", "install", "-y", "-q", "postfix"]
    result = subprocess.run(install_cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:  # the package lists may be missing in a fresh container: update, try again
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        result = subprocess.run(install_cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return False, f"'{' '.join(install_cmd)}' failed: {' | '.join(tail)}"
    if all(which(name) for name in ("postfix", "smtp-source", "smtp-sink")):
        return True, f"installed now ({INSTALL_COMMAND})"
    return False, "the postfix package installed, but smtp-source / smtp-sink are missing"


def version() -> str:
    postconf = which("postconf")
    if not postconf:
        return "?"
    result = subprocess.run([postconf, "-d", "-h", "mail_version"], capture_output=True, text=True)
    return result.stdout.strip() or "?"


MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{listen} inet n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# A private Postfix instance for bench/relay: an anonymous relay for 127.0.0.0/8 to a smarthost.
compatibility_level = 3.6
config_directory = {dir}/etc
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.localdomain
mydomain = localdomain
myorigin = $myhostname
mydestination =
relay_domains =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relayhost = [127.0.0.1]:{sink_port}
default_transport = smtp
smtp_tls_security_level = none
smtpd_tls_security_level = none
biff = no
{log}
"""


class PostfixInstance:
    """A Postfix instance under ``directory`` answering on 127.0.0.1:``port`` and relaying everything
    from 127.0.0.0/8 to the smarthost at 127.0.0.1:``sink_port``."""

    def __init__(self, directory: Path, port: int, sink_port: int, log: bool = False) -> None:
        self.directory, self.port, self.sink_port, self.log = directory, port, sink_port, log
        self.etc = directory / "etc"
        self.postfix = which("postfix") or "postfix"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``postfix -c ETC ARGS``. Postfix writes its errors to stderr only when that is a
        terminal (otherwise to syslog, which may not exist), so stderr is a pseudo-terminal."""
        env = dict(os.environ, PATH=os.environ.get("PATH", "") + ":" + SBIN_PATH)
        master, slave = pty.openpty()
        try:
            result = subprocess.run(
                [self.postfix, "-c", str(self.etc), *args], stdout=subprocess.PIPE, stderr=slave, text=True, env=env
            )
            os.close(slave)
            slave = -1
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO once the terminal has no writer left
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            if slave >= 0:
                os.close(slave)
            os.close(master)
        result.stderr = b"".join(chunks).decode("utf-8", "replace")
        if check and result.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)}: {(result.stderr or result.stdout).strip()}")
        return result

    def start(self, timeout: float = 30.0) -> int:
        """Write the configuration, start the master; returns its pid."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o755)
        self.etc.mkdir(exist_ok=True)
        (self.directory / "queue").mkdir(exist_ok=True)
        data = self.directory / "data"
        data.mkdir(exist_ok=True)
        shutil.chown(data, "postfix", "postfix")
        log = (
            f"maillog_file_prefixes = {self.directory}\nmaillog_file = {self.directory}/maillog"
            if self.log
            else "# logs go to syslog (none here); --postfix-log writes them to maillog_file"
        )
        (self.etc / "main.cf").write_text(MAIN_CF.format(dir=self.directory, sink_port=self.sink_port, log=log))
        (self.etc / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        self._run("start")
        pid_file = self.directory / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return int(pid_file.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                time.sleep(0.05)
        raise TimeoutError(f"no {pid_file} after {timeout:.0f} s")

    def stop(self) -> None:
        result = self._run("stop", check=False)
        if result.returncode != 0:
            self._run("abort", check=False)

    def queued(self) -> int:
        """Messages still in the instance's queue (incoming, active, deferred)."""
        total = 0
        for name in ("incoming", "active", "deferred", "maildrop", "hold"):
            root = self.directory / "queue" / name
            if root.is_dir():
                total += sum(len(files) for _, _, files in os.walk(root))
        return total
