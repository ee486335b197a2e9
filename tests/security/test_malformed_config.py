"""Malformed configuration files: each is refused with a message naming the file, the section
(connector) and the field, and the relay never starts half-configured.

The corpus lives in ``configs/``: one small broken TOML file per mistake (bad syntax, unknown keys,
wrong types, bad addresses and ranges, impossible combinations, open relays). The first line of
each file says what must be reported::

    # expect: <section> | <field> | <substring of the message>

with ``-`` for an empty section or field (a file-wide problem such as invalid TOML). A file is
refused when ``load_policy`` (reading, validation and the plugins' checks, as at start-up) raises
``ConfigError``; one of its errors must carry exactly that section and field, the file's path, and
the substring. Other files (binary garbage, empty, huge, deeply nested, not UTF-8) are generated.
"""

from __future__ import annotations

import errno
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

import salmon_relayauth
from salmon_relayauth import ConfigError, ConfigProblem, Severity, load_policy, read_config
from salmon_relayauth.cli import main

CONFIGS = Path(__file__).resolve().parent / "configs"
CORPUS = sorted(CONFIGS.glob("*.toml"))
EXPECT = re.compile(r"^# expect: (?P<section>[^|]+?) \| (?P<field>[^|]+?) \| (?P<substring>.+)$")
CATEGORIES = ("syntax_", "structure_", "unknown_", "type_", "address_", "binding_", "range_", "combo_", "openrelay_")


@dataclass(frozen=True)
class Expected:
    section: str
    field: str
    substring: str

    def describe(self) -> str:
        return f"section {self.section!r}, field {self.field!r}, message containing {self.substring!r}"


def expected_of(path: Path) -> Expected:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = EXPECT.match(first)
    assert match, f"{path.name}: first line must be '# expect: <section> | <field> | <substring>', not {first!r}"
    section, field = (match[name].strip() for name in ("section", "field"))
    return Expected("" if section == "-" else section, "" if field == "-" else field, match["substring"].strip())


_REFUSALS: dict[Path, ConfigError] = {}


def refusal(path: Path) -> ConfigError:
    """What start-up says about the file: ``load_policy`` must raise ConfigError, nothing else."""
    if path in _REFUSALS:
        return _REFUSALS[path]
    try:
        load_policy(path)
    except ConfigError as error:
        _REFUSALS[path] = error
        return error
    except Exception as error:  # noqa: BLE001 - the point is that nothing else may escape
        pytest.fail(f"{path.name}: load_policy raised {type(error).__name__} instead of ConfigError: {error}")
    pytest.fail(f"{path.name}: load_policy accepted a broken configuration")


def matching(problems: list[ConfigProblem], path: Path, expected: Expected) -> list[ConfigProblem]:
    return [
        problem
        for problem in problems
        if problem.severity is Severity.ERROR
        and problem.source == str(path)
        and problem.section == expected.section
        and problem.field == expected.field
        and expected.substring in problem.message
    ]


def assert_names_file_section_and_field(problems: list[ConfigProblem], path: Path, expected: Expected) -> ConfigProblem:
    found = matching(problems, path, expected)
    listing = "\n".join(f"  {problem!s}  [section={problem.section!r} field={problem.field!r}]" for problem in problems)
    assert found, f"{path.name}: no error with {expected.describe()}; got:\n{listing}"
    problem = found[0]
    where = ": ".join(part for part in (str(path), expected.section, expected.field) if part)
    assert str(problem).startswith(f"{where}: "), str(problem)
    return problem


def _id(path: Path) -> str:
    return path.stem


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_covers_every_kind_of_mistake() -> None:
    assert len(CORPUS) >= 30, f"only {len(CORPUS)} files in {CONFIGS}"
    for category in CATEGORIES:
        assert len([p for p in CORPUS if p.name.startswith(category)]) >= 2, f"too few {category}* files"
    for path in CORPUS:
        assert path.name.startswith(CATEGORIES), f"{path.name}: name it after its category"
        expected_of(path)  # every file states what must be reported
        assert path.stat().st_size < 4096, f"{path.name}: corpus files stay small and readable"


# --------------------------------------------------------------------------- every file is refused


@pytest.mark.parametrize("path", CORPUS, ids=_id)
def test_broken_file_is_refused_naming_file_section_and_field(path: Path) -> None:
    expected = expected_of(path)
    error = refusal(path)
    assert error.errors, "a refusal lists at least one error"
    assert_names_file_section_and_field(error.problems, path, expected)
    for problem in error.problems:
        assert problem.source == str(path), f"every problem names the file: {problem}"
    for problem in error.errors:
        assert str(problem) in str(error), "the exception's text lists every error"


@pytest.mark.parametrize("path", CORPUS, ids=_id)
def test_read_config_never_raises_and_never_returns_a_config_with_errors(path: Path) -> None:
    """``read_config`` is documented to raise nothing; the file-level problems (everything but the
    plugins' checks) are already among its problems."""
    try:
        result = read_config(path)
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"{path.name}: read_config raised {type(error).__name__}: {error}")
    if result.errors:
        assert result.config is None, "a configuration with errors is never handed out"
    else:
        assert result.config is not None
    expected = expected_of(path)
    plugin_level = (path.name.startswith("openrelay_") and expected.field == "remote_ip_ranges") or path.name.startswith(
        ("unknown_plugin_settings", "unknown_disabled_plugin")
    )
    if not plugin_level:
        # a mistake in the file itself is found by the reader, before any plugin runs
        assert_names_file_section_and_field(result.problems, path, expected)
    # and start-up reports everything the reader reported
    started = {str(problem) for problem in refusal(path).errors}
    for problem in result.errors:
        assert str(problem) in started, f"read_config reports {problem} but load_policy does not"


@pytest.mark.parametrize("path", CORPUS, ids=_id)
def test_check_exits_1_and_prints_the_same_errors(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected_errors = [str(problem) for problem in refusal(path).errors]
    try:
        status = main(["check", str(path)])
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"{path.name}: check raised {type(error).__name__}: {error}")
    out, err = capsys.readouterr()
    assert status == 1
    printed = err.splitlines()
    for line in expected_errors:
        assert line in printed, f"check did not print {line!r}; stderr:\n{err}"
    assert printed[-1].startswith(f"{path}: ") and "the relay will not start" in printed[-1]
    assert "valid," not in out


# --------------------------------------------------------------------------- the real command


CLI_SAMPLES = [  # a handful: every corpus file goes through ``main(["check", ...])`` in process above
    "openrelay_anonymous_everywhere.toml",
    "syntax_unterminated_string.toml",
    "range_connection_timeout_overflow.toml",
]


def check_command() -> list[str]:
    script = Path(sys.executable).with_name("salmon-relayauth")
    return [str(script)] if script.exists() else [sys.executable, "-m", "salmon_relayauth"]


def run_checks(paths: list[Path]) -> dict[Path, subprocess.CompletedProcess[str]]:
    """``salmon-relayauth check PATH`` for each path, the processes running side by side."""
    running = {
        path: subprocess.Popen([*check_command(), "check", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for path in paths
    }
    results = {}
    for path, process in running.items():
        out, err = process.communicate(timeout=120)
        results[path] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return results


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hostile")
    for name, (content, *_) in HOSTILE.items():
        (directory / f"{name}.toml").write_bytes(content)
    return directory


@pytest.fixture(scope="module")
def check_runs(hostile_dir: Path) -> dict[Path, subprocess.CompletedProcess[str]]:
    return run_checks([CONFIGS / name for name in CLI_SAMPLES] + [hostile_dir / f"{name}.toml" for name in CLI_HOSTILE])


@pytest.mark.parametrize("name", CLI_SAMPLES)
def test_check_command_exits_1_with_the_message_and_no_traceback(name: str, check_runs: dict[Path, subprocess.CompletedProcess[str]]) -> None:
    path = CONFIGS / name
    expected = expected_of(path)
    completed = check_runs[path]
    assert "Traceback" not in completed.stderr, completed.stderr[-600:]
    assert completed.returncode == 1, completed.stderr[-600:]
    where = ": ".join(part for part in (str(path), expected.section, expected.field) if part)
    lines = [line for line in completed.stderr.splitlines() if line.startswith(f"{where}: ")]
    assert any(expected.substring in line for line in lines), completed.stderr[-2000:]


# --------------------------------------------------------------------------- the relay does not start


RECEIVER_SAMPLES = [
    "openrelay_anonymous_everywhere.toml",
    "openrelay_externally_secured_public.toml",
    "combo_partial_overlap.toml",
    "address_range_reversed.toml",
    "unknown_connector_key_misspelt_limit.toml",
    "combo_inactivity_not_shorter.toml",
    "type_deny_string.toml",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def nothing_listens_on(port: int) -> bool:
    """True when no socket listens on ``port`` for 127.0.0.1 (bound to it or to the wildcard).

    The probe binds with SO_REUSEADDR: Linux still refuses the bind while any socket listens on the
    port there, but not because another process's connection happens to use it as its local port
    (tests elsewhere on the machine open many), so the answer does not depend on unrelated traffic.
    A connection attempt confirms it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return False
            raise
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.settimeout(2)
        if client.connect_ex(("127.0.0.1", port)) != 0:
            return True
        return bool(client.getsockname() == client.getpeername())  # a self-connection is not a listener


def relay_threads() -> set[str]:
    return {thread.name for thread in threading.enumerate() if thread.name.startswith("relayauth")}


def on_free_port(name: str, directory: Path) -> tuple[Path, int]:
    """A copy of a corpus file whose bindings use a port nothing listens on."""
    port = free_port()
    text = (CONFIGS / name).read_text(encoding="utf-8")
    assert ":2525" in text, f"{name}: the receiver tests need a binding on port 2525"
    copy = directory / name
    copy.write_text(text.replace(":2525", f":{port}"), encoding="utf-8")
    return copy, port


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_port_probe_sees_a_listening_socket(host: str) -> None:
    """The probe below would notice a relay that started listening (as the relay binds: SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert not nothing_listens_on(port)
    assert nothing_listens_on(port)


@pytest.mark.parametrize("name", RECEIVER_SAMPLES)
def test_receiver_refuses_the_file_before_anything_listens(name: str, tmp_path: Path) -> None:
    path, port = on_free_port(name, tmp_path)
    threads_before = relay_threads()
    with pytest.raises(ConfigError) as info:
        salmon_relayauth.RelayReceiver(path)
    assert_names_file_section_and_field(info.value.problems, path, expected_of(path))
    assert nothing_listens_on(port), f"port {port} is listening after a refused configuration"
    assert relay_threads() == threads_before, "a refused configuration must not leave threads running"
    assert not (tmp_path / "queue").exists(), "a refused configuration must not create the queue"


def test_receiver_with_the_mistake_fixed_does_listen(tmp_path: Path) -> None:
    """Control for the test above: the same file, fixed, starts and holds the port."""
    path, port = on_free_port("address_range_reversed.toml", tmp_path)
    path.write_text(path.read_text().replace("192.168.5.20-192.168.5.11", "192.168.5.11-192.168.5.20"))
    receiver = salmon_relayauth.RelayReceiver(path)
    receiver.start()
    try:
        assert not nothing_listens_on(port)
        assert (tmp_path / "queue").is_dir()
    finally:
        receiver.stop()
    assert nothing_listens_on(port)


# --------------------------------------------------------------------------- hostile files


def _garbage() -> bytes:
    return b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 16


def _connector(extra: str = "") -> str:
    return (
        '[[connectors]]\nname = "Relay"\nbindings = ["127.0.0.1:2525"]\n'
        f'remote_ip_ranges = ["192.168.5.10"]\npermission_groups = ["AnonymousUsers"]\n{extra}'
    )


DEPTH = 1000
HEADERS = b"[[connectors]]\n" * (1_000_000 // len(b"[[connectors]]\n"))
# name -> (content, section, field, substring); None for "any clear problem"
HOSTILE: dict[str, tuple[bytes, str | None, str | None, str | None]] = {
    "binary_garbage": (_garbage(), "", "", "not UTF-8"),
    "nul_bytes": (b"\x00\x00\x00\x00" + _connector().encode(), "", "", "invalid TOML"),
    "empty": (b"", "", "connectors", "no [[connectors]] defined"),
    "only_whitespace_and_comments": (b"\n\n   \n# nothing here\n\t\n", "", "connectors", "no [[connectors]] defined"),
    "one_megabyte_of_connector_headers": (HEADERS, "connectors[0]", "name", "is required"),
    "deeply_nested_table_headers": (
        ("[" + ".".join(["deep"] * DEPTH) + "]\nx = 1\n" + _connector()).encode(), "", "deep", "unknown key",
    ),
    "deeply_nested_inline_tables": (
        (_connector() + "comment = " + "{ a = " * DEPTH + "1" + " }" * DEPTH + "\n").encode(), None, None, None,
    ),
    "deeply_nested_arrays": (
        (_connector().replace('remote_ip_ranges = ["192.168.5.10"]', "remote_ip_ranges = " + "[" * DEPTH + "]" * DEPTH)).encode(),
        None, None, None,
    ),
    "latin_1": (_connector('comment = "Imprimante café"\n').encode("latin-1"), "", "", "not UTF-8"),
    "utf_16": (_connector().encode("utf-16"), "", "", "not UTF-8"),
    "lone_surrogate_bytes": (_connector().encode() + b'comment = "\xed\xa0\x80"\n', "", "", "not UTF-8"),
}


CLI_HOSTILE = ["binary_garbage", "one_megabyte_of_connector_headers", "deeply_nested_inline_tables"]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_gives_a_clear_problem(name: str, hostile_dir: Path) -> None:
    path = hostile_dir / f"{name}.toml"
    _, section, field, substring = HOSTILE[name]
    try:
        result = read_config(path)
    except BaseException as error:  # noqa: BLE001 - RecursionError, MemoryError, ... must not escape
        pytest.fail(f"read_config raised {type(error).__name__} on {name}: {str(error)[:200]}")
    assert result.config is None
    assert result.errors
    for problem in result.problems:
        assert problem.source == str(path)
        assert problem.message and "Traceback" not in problem.message
        assert len(str(problem)) < 1000, "a problem is a readable line, not a dump of the file"
    if substring is not None:
        assert_names_file_section_and_field(result.problems, path, Expected(section or "", field or "", substring))
    if name == "one_megabyte_of_connector_headers":
        count = HEADERS.count(b"[[connectors]]")
        nameless = [p for p in result.errors if p.field == "name" and p.section.startswith("connectors[")]
        assert len(nameless) == count, "every nameless connector is reported"
        assert nameless[-1].section == f"connectors[{count - 1}]"
    else:
        assert refusal(path).errors


@pytest.mark.parametrize("name", CLI_HOSTILE)
def test_check_command_on_hostile_files_exits_1_without_traceback(name: str, hostile_dir: Path, check_runs: dict[Path, subprocess.CompletedProcess[str]]) -> None:
    path = hostile_dir / f"{name}.toml"
    completed = check_runs[path]
    assert "Traceback" not in completed.stderr, completed.stderr[-600:]
    assert completed.returncode == 1
    lines = completed.stderr.splitlines()
    assert lines and all(line.startswith(f"{path}: ") for line in lines), completed.stderr[:2000]
    assert "the relay will not start" in lines[-1]


def test_a_key_with_a_line_break_cannot_forge_lines_of_the_check_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each problem is printed on one line that starts with the file name, whatever the file says:
    an operator (or a script reading ``check``) must not be shown a forged verdict."""
    path = tmp_path / "forged.toml"
    path.write_text(
        '"server_name\\nforged.toml: valid, 1 connector(s)" = 1\n'
        + _connector('"max_hop_count\\r\\nx" = 3\n'),
        encoding="utf-8",
    )
    error = refusal(path)
    for problem in error.problems:
        assert "\n" not in str(problem) and "\r" not in str(problem), repr(str(problem))
    assert main(["check", str(path)]) == 1
    _, err = capsys.readouterr()
    for line in err.splitlines():
        assert line.startswith(f"{path}: "), f"forged line in check output: {line!r}"
