"""deploy/: what can be built and run on this machine, run for real.

- The systemd units pass `systemd-analyze verify` with no warning (ExecStart pointed at this
  venv's `validator`), and `systemd-analyze security --offline` rates them OK or better.
- The compose file passes `docker compose config` (or Debian's `docker-compose config`) where
  either is installed; both only parse, no engine is needed. Prometheus's config passes
  `promtool check config` where promtool is installed.
- Without a Docker engine the image cannot be built here, so its commands run in this venv
  the same way, as real processes on 127.0.0.1 with a temporary data directory: every
  compose service's command line, read from compose.yaml (its fixed 10.150.47.x addresses
  become 127.0.0.1, its ports free ports, /var/lib/bwpool a temp folder, /app this repo),
  the Dockerfile's ENTRYPOINT + CMD on a data directory made from the example configs, and
  the provider unit's ExecStart with the example provider.env. Checked: the chain's and the
  validators' health checks (the image's HEALTHCHECK command), /healthz, the validators
  connected to each other, the providers' registrations reaching them, /metrics at every
  Prometheus target (announcing every metric the Grafana dashboard in deploy/grafana/
  reads), and exit 0 on SIGTERM (the stop signal of every unit and service).
- The example network.toml, placeholders filled as deploy/README.md says, loads with
  `validator.spec.load_spec`, and the example config.toml with `validator.config.load_config`.

compose.yaml and prometheus.yml are read with PyYAML when it is installed, else with the small
reader below (enough for those two files; checked against PyYAML when both are there).
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
VENV_BIN = Path(sys.executable).parent
COMPOSE_NET = re.compile(r"10\.150\.47\.\d+")
EXAMPLE_HOST = re.compile(r"203\.0\.113\.\d+")
PORT_FLAGS = {"--port", "--data-port", "--p2p-port", "--http-port"}
STARTUP_SECONDS = 40


# -- a small YAML reader (block maps and lists, flow lists, quotes, anchors, merge keys) --------
class _Yaml:
    def __init__(self, text: str) -> None:
        self.lines: list[tuple[int, str]] = []
        for raw in text.splitlines():
            line = self._strip_comment(raw).rstrip()
            if line.strip() and line.strip() != "---":
                self.lines.append((len(line) - len(line.lstrip(" ")), line.strip()))
        self.anchors: dict[str, Any] = {}
        self.i = 0

    @staticmethod
    def _strip_comment(line: str) -> str:
        quote = None
        for k, ch in enumerate(line):
            if quote:
                if ch == quote:
                    quote = None
            elif ch in "'\"" and (k == 0 or line[k - 1] in " [,:-"):
                quote = ch
            elif ch == "#" and (k == 0 or line[k - 1] in " \t"):
                return line[:k]
        return line

    def parse(self) -> Any:
        return self._block(self.lines[0][0]) if self.lines else None

    def _block(self, indent: int) -> Any:
        return self._seq(indent) if self._is_item(self.lines[self.i][1]) else self._map(indent)

    @staticmethod
    def _is_item(text: str) -> bool:
        return text == "-" or text.startswith("- ")

    def _map(self, indent: int, first: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merges: list[dict[str, Any]] = []
        while first is not None or (self.i < len(self.lines) and self.lines[self.i][0] == indent
                                    and not self._is_item(self.lines[self.i][1])):
            if first is None:
                text = self.lines[self.i][1]
                self.i += 1
            else:
                text, first = first, None
            key, value = self._split_key(text)
            node = self._value(value, indent)
            if key == "<<":
                merges.extend(node if isinstance(node, list) else [node])
            else:
                out[key] = node
        for merged in merges:
            for k, v in merged.items():
                out.setdefault(k, v)
        return out

    def _seq(self, indent: int) -> list[Any]:
        out: list[Any] = []
        while (self.i < len(self.lines) and self.lines[self.i][0] == indent
               and self._is_item(self.lines[self.i][1])):
            text = self.lines[self.i][1][1:].strip()
            self.i += 1
            if not text:
                out.append(self._nested(indent))
            elif self._key_match(text):
                out.append(self._map(indent + 2, first=text))
            else:
                out.append(self._value(text, indent))
        return out

    _KEY = re.compile(r"""^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s'"\[{][^:]*?|<<)\s*:(?:\s+(.*))?$""")

    def _key_match(self, text: str) -> re.Match[str] | None:
        return self._KEY.match(text)

    def _split_key(self, text: str) -> tuple[str, str]:
        m = self._key_match(text)
        if m is None:
            raise ValueError(f"not a 'key: value' line: {text!r}")
        return str(self._scalar(m.group(1))), (m.group(2) or "").strip()

    def _nested(self, indent: int) -> Any:
        if self.i < len(self.lines) and (self.lines[self.i][0] > indent or (
                self.lines[self.i][0] == indent and self._is_item(self.lines[self.i][1]))):
            return self._block(self.lines[self.i][0])
        return None

    def _value(self, text: str, indent: int) -> Any:
        anchor = None
        if text.startswith("&"):
            anchor, _, text = text[1:].partition(" ")
            text = text.strip()
        if text.startswith("*"):
            return self.anchors[text[1:]]
        node = self._nested(indent) if not text else (
            self._flow(text) if text.startswith("[") else self._scalar(text))
        if anchor:
            self.anchors[anchor] = node
        return node

    def _flow(self, text: str) -> list[Any]:
        if not text.endswith("]"):
            raise ValueError(f"unsupported flow collection: {text!r}")
        items, cur, quote = [], "", None
        for ch in text[1:-1]:
            if quote:
                cur += ch
                quote = None if ch == quote else quote
            elif ch in "'\"":
                cur += ch
                quote = ch
            elif ch == ",":
                items.append(cur.strip())
                cur = ""
            else:
                cur += ch
        if cur.strip():
            items.append(cur.strip())
        return [self._scalar(item) for item in items]

    @staticmethod
    def _scalar(text: str) -> Any:
        if text.startswith('"') and text.endswith('"') and len(text) >= 2:
            return json.loads(text)
        if text.startswith("'") and text.endswith("'") and len(text) >= 2:
            return text[1:-1].replace("''", "'")
        if text.startswith("{"):
            raise ValueError(f"flow mappings are not supported here: {text!r}")
        if re.fullmatch(r"[-+]?\d+", text):
            return int(text)
        if re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+)([eE][-+]?\d+)?", text):
            return float(text)
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("null", "~"):
            return None
        return text


def load_yaml(path: Path) -> Any:
    text = path.read_text()
    ours = _Yaml(text).parse()
    try:
        import yaml
    except ImportError:
        return ours
    theirs = yaml.safe_load(text)
    assert ours == theirs, f"the test's YAML reader disagrees with PyYAML on {path}"
    return theirs


# -- reading the Dockerfile and the units ----------------------------------------------------
def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined."""
    joined, out = "", []  # type: tuple[str, list[tuple[str, str]]]
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        joined += line.rstrip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        word, _, rest = joined.strip().partition(" ")
        if word.upper() == "FROM":
            out = []
        out.append((word.upper(), rest.strip()))
        joined = ""
    return out


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def unit_sections(path: Path) -> dict[str, list[tuple[str, str]]]:
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{path}: {line!r} outside a section"
        current.append((key.strip(), value.strip()))
    return sections


def env_file(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def systemd_exec(unit: Path, overrides: dict[str, str]) -> list[str]:
    """ExecStart expanded as systemd does: Environment= then EnvironmentFile= values
    (``overrides`` here), ${VAR} as one word, $VAR split on white space."""
    service = unit_sections(unit)["Service"]
    env: dict[str, str] = {}
    for key, value in service:
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    env.update(overrides)
    (command,) = [v for k, v in service if k == "ExecStart"]
    argv: list[str] = []
    for word in shlex.split(command):
        if m := re.fullmatch(r"\$\{(\w+)\}", word):
            argv.append(env[m.group(1)])
        elif m := re.fullmatch(r"\$(\w+)", word):
            argv.extend(env.get(m.group(1), "").split())
        else:
            argv.append(word)
    return argv


# -- translating container command lines to this machine --------------------------------------
def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int) -> list[int]:
    """A block of ports free now, outside the kernel's ephemeral range (where the processes'
    own outgoing connections could take one before its listener binds it)."""
    low, high = _ephemeral_range()
    candidates = [(a, b) for a, b in ((10_000, low), (high + 1, 65_535)) if b - a > count + 100]
    rng = random.Random()
    for _ in range(200):
        start, end = rng.choice(candidates)
        base = rng.randrange(start, end - count)
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free block of ports")


@dataclass
class Localizer:
    """Maps a container's addresses, ports and paths to this machine's."""

    data_dir: Path
    ports: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def ports_in(words: list[str]) -> set[int]:
        found: set[int] = set()
        for prev, word in zip([""] + words, words):
            found.update(int(p) for p in re.findall(r"(?:/tcp/|:)(\d{2,5})\b", word))
            if prev in PORT_FLAGS and word.isdigit():
                found.add(int(word))
        return found

    def word(self, word: str, prev: str = "") -> str:
        word = COMPOSE_NET.sub("127.0.0.1", EXAMPLE_HOST.sub("127.0.0.1", word))
        word = word.replace("/var/lib/bwpool", str(self.data_dir)).replace("/app/", f"{ROOT}/")
        word = re.sub(r"(?<=/tcp/)(\d+)|(?<=:)(\d{2,5})\b",
                      lambda m: str(self.ports.get(int(m.group(0)), m.group(0))), word)
        if prev in PORT_FLAGS and word.isdigit():
            word = str(self.ports.get(int(word), word))
        return word

    def argv(self, words: list[str]) -> list[str]:
        out = [self.word(w, p) for p, w in zip([""] + words, words)]
        if out[0] == "validator":
            out[0] = str(VENV_BIN / "validator")
        elif out[0] == "python":
            out[0] = sys.executable
        return out

    def env(self, values: dict[str, str]) -> dict[str, str]:
        return {k: self.word(str(v)) for k, v in values.items()}


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "stdout.txt", "wb") as out, open(self.folder / "stderr.txt", "wb") as err:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=err, env={**os.environ, **self.env},
                                            cwd=self.folder, start_new_session=True)
        return self

    def stdout(self) -> str:
        return (self.folder / "stdout.txt").read_text(errors="replace")

    def stderr(self) -> str:
        return (self.folder / "stderr.txt").read_text(errors="replace")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def describe(self) -> str:
        code = None if self.process is None else self.process.poll()
        return (f"{self.name} ({shlex.join(self.argv)}) exit {code}; stderr tail:\n"
                f"{self.stderr()[-1500:]}")


def wait_for(what: str, condition: Callable[[], Any], timeout: float,
             procs: list[Proc] = (), poll: float = 0.3) -> Any:  # type: ignore[assignment]
    deadline = time.time() + timeout
    last: Any = None
    while time.time() < deadline:
        for p in procs:
            assert p.running(), f"while waiting for {what}: {p.describe()}"
        last = condition()
        if last:
            return last
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}; "
                         + "; ".join(p.describe() for p in procs))


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def healthz_answer(url: str) -> dict[str, Any] | None:
    """/healthz answered with JSON: 200, or 503 with the reasons (as issue 12 item 4 has it)."""
    status, body = http_get(url + "/healthz")
    if status not in (200, 503):
        return None
    try:
        return {"status": status, "body": json.loads(body)}
    except ValueError:
        return None


# -- static checks -------------------------------------------------------------------------------
def test_dockerfile_shape() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert stages and all(s == "python:3.11-slim" for s in stages), stages
    final = dict(dockerfile_instructions(DEPLOY / "Dockerfile"))
    assert final["USER"] == "bwpool"
    assert exec_form(final["VOLUME"]) == ["/var/lib/bwpool"]
    assert exec_form(final["ENTRYPOINT"]) == ["validator"]
    assert exec_form(final["CMD"]) == ["join", "--config", "/var/lib/bwpool/config.toml"]
    assert "pip install" in text and "pip wheel" in text and "COPY . " in text
    assert "CMD [" in final["HEALTHCHECK"] and "/healthz" in (DEPLOY / "healthcheck.py").read_text()
    assert "curl" not in final["HEALTHCHECK"]
    # The pool program ships inside the package (pip install puts it in site-packages).
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "pool/pool.so" in pyproject["tool"]["setuptools"]["package-data"]["programs"]
    assert (ROOT / "programs" / "pool" / "pool.so").is_file()
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_compose_shape() -> None:
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"chain", "init", "prometheus", *(f"v{i}" for i in range(4)),
                             *(f"p{i}" for i in range(4))}
    for name, svc in services.items():
        assert "ports" not in svc, f"{name} publishes ports on the host; compose.ports.yaml does that"
        assert "network_mode" not in svc
    program = services["chain"]["command"][-1].split("=")[0]
    init = services["init"]["command"]
    assert init[init.index("--program-id") + 1] == program
    for i in range(4):
        assert services[f"v{i}"]["command"] == ["join", "--config", f"/var/lib/bwpool/v{i}/config.toml"]
        assert services[f"v{i}"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert "--auto-claim" in services[f"p{i}"]["command"]
    assert services["init"]["depends_on"]["chain"]["condition"] == "service_healthy"
    # Prometheus scrapes exactly the validators' status endpoints.
    prom = load_yaml(DEPLOY / "prometheus.yml")
    (job,) = prom["scrape_configs"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    http = [v for v in init if re.fullmatch(r"v\d=[\d.]+:\d+:\d+", v)]
    assert sorted(targets) == sorted(f"{v.split('=')[1].split(':')[0]}:{v.split(':')[2]}" for v in http)
    assert job["metrics_path"] == "/metrics"
    overlay = load_yaml(DEPLOY / "compose.ports.yaml")
    for name, svc in overlay["services"].items():
        assert all(str(p).startswith("127.0.0.1:") for p in svc["ports"]), name


def _docker_compose() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_config_parses() -> None:
    cli = _docker_compose()
    if cli is None:
        pytest.skip("neither `docker compose` (the compose plugin) nor `docker-compose` (Debian "
                    "package docker-compose) is installed; the file is still parsed and its "
                    "commands run by this module")
    result = subprocess.run([*cli, "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    overlay = subprocess.run([*cli, "-f", str(DEPLOY / "compose.yaml"), "-f",
                              str(DEPLOY / "compose.ports.yaml"), "config", "--quiet"],
                             capture_output=True, text=True, timeout=60, check=False)
    assert overlay.returncode == 0, overlay.stderr


def test_prometheus_config_checks() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    result = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


UNITS = ("bwpool-validator.service", "bwpool-provider.service")


def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    validator_bin = VENV_BIN / "validator"
    assert validator_bin.exists()
    for unit in UNITS:
        text = (DEPLOY / "systemd" / unit).read_text()
        sections = unit_sections(DEPLOY / "systemd" / unit)
        service = dict(sections["Service"])
        assert service["Restart"] == "on-failure" and service["KillSignal"] == "SIGTERM"
        assert service["StateDirectory"] == "bwpool" and service["User"] == "bwpool"
        assert "TimeoutStopSec" in service and service["ReadWritePaths"] == "/var/lib/bwpool"
        for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                           ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
            assert service[key] == value, (unit, key)
        # verify checks that ExecStart's program exists: point it at this venv's.
        (tmp_path / unit).write_text(text.replace("/opt/bwpool/venv/bin/validator", str(validator_bin)))
    # The validator unit runs what the image runs, from the venv systemd's README installs.
    final = dict(dockerfile_instructions(DEPLOY / "Dockerfile"))
    image = exec_form(final["ENTRYPOINT"]) + exec_form(final["CMD"])
    unit_argv = systemd_exec(DEPLOY / "systemd" / "bwpool-validator.service", {})
    assert unit_argv == ["/opt/bwpool/venv/bin/validator", *image[1:]], unit_argv
    result = subprocess.run([analyze, "verify", *(str(tmp_path / u) for u in UNITS)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
        result.stdout + result.stderr
    for unit in UNITS:  # exposure 2.0 or less of 10 ("OK"), as systemd rates it offline
        security = subprocess.run([analyze, "security", "--offline=yes", "--threshold=20",
                                   str(tmp_path / unit)], capture_output=True, text=True, timeout=60,
                                  check=False)
        assert security.returncode == 0, security.stdout[-2000:] + security.stderr


def init_validators(folders: list[Path], network: Path, ports: list[int]) -> list[dict[str, Any]]:
    """`validator init` as an operator runs it, once per folder (side by side): the entries
    it printed, in order."""
    runs = [subprocess.Popen(
        [str(VENV_BIN / "validator"), "init", "--data-dir", str(folder), "--network",
         str(network), "--name", f"v{i}", "--region", "eu-west", "--lat", "48.85",
         "--lon", "2.35", "--listen-host", "127.0.0.1", "--p2p-port", str(ports[2 * i]),
         "--http-host", "127.0.0.1", "--http-port", str(ports[2 * i + 1])],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, folder in enumerate(folders)]
    entries = []
    for run in runs:
        out, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        entries.extend(tomllib.loads(out)["validators"])
    return entries


def fill_example_network(text: str, entries: list[dict[str, Any]], rpc_url: str) -> str:
    """The example spec with its <PLACEHOLDERS> filled in from `validator init`'s entries, as
    deploy/README.md says (and each validator's port from its entry, the example has 7001)."""
    from solders.keypair import Keypair

    values = {"RPC_URL": rpc_url, "POOL_PROGRAM_ID": str(Keypair().pubkey()),
              "POOL_ADDRESS": str(Keypair().pubkey())}
    for i, entry in enumerate(entries):
        values[f"V{i}_SIGNING_KEY"] = entry["signing_key"]
        values[f"V{i}_IDENTITY"] = entry["identity"]
        match = re.fullmatch(r"/ip4/([\d.]+)/tcp/(\d+)/p2p/\w+", entry["addrs"][0])
        assert match is not None, entry
        host, port = match.groups()
        values[f"V{i}_HOST"] = host
        text = text.replace(f"/tcp/7001/p2p/<V{i}_IDENTITY>", f"/tcp/{port}/p2p/<V{i}_IDENTITY>")

    def fill(m: re.Match[str]) -> str:
        assert m.group(1) in values, f"no value for placeholder <{m.group(1)}>"
        return values[m.group(1)]

    return re.sub(r"<([A-Z0-9_]+)>", fill, text)


def test_example_configs_load(tmp_path: Path) -> None:
    from validator.config import load_config
    from validator.spec import load_spec

    entries = init_validators([tmp_path / f"v{i}" for i in range(4)], tmp_path / "network.toml",
                              free_ports(8))
    text = (DEPLOY / "examples" / "network.toml").read_text()
    (tmp_path / "network.toml").write_text(fill_example_network(text, entries, "http://127.0.0.1:1"))
    spec = load_spec(tmp_path / "network.toml")
    assert spec.n == 4 and spec.threshold == 3 and spec.pool_address and spec.pool_program_id
    assert {v.name for v in spec.validators} == {"v0", "v1", "v2", "v3"}
    assert spec.rewards.demand("ap-south") == 1500
    # Every field NetworkSpec has is shown in the example.
    example = tomllib.loads(text)
    assert set(spec.to_dict()) == set(example), set(spec.to_dict()) ^ set(example)
    config = tmp_path / "v0" / "config.toml"
    config.write_text((DEPLOY / "examples" / "validator.config.toml").read_text())
    loaded = load_config(config)
    assert loaded.network == tmp_path / "v0" / "network.toml"
    assert loaded.http_host == "127.0.0.1" and loaded.listen == "/ip4/0.0.0.0/tcp/7001"
    # The example has every key `validator init` writes, and only those.
    assert set(tomllib.loads(config.read_text())) == set(loaded.to_dict())
    provider = env_file(DEPLOY / "examples" / "provider.env")
    argv = systemd_exec(DEPLOY / "systemd" / "bwpool-provider.service", provider)
    assert argv[1:3] == ["provide", "--network"] and "--auto-claim" in argv and "" not in argv


# -- the network, as compose runs it, on this machine -------------------------------------------
@dataclass
class Network:
    data: Path
    loc: Localizer
    procs: dict[str, Proc]
    compose: dict[str, Any]
    image_healthcheck: list[str]
    single_url: str

    def validator_urls(self) -> dict[str, str]:
        init = self.compose["services"]["init"]["command"]
        urls = {}
        for word in init:
            if m := re.fullmatch(r"(v\d+)=([\d.]+):(\d+):(\d+)", word):
                urls[m.group(1)] = f"http://127.0.0.1:{self.loc.ports[int(m.group(4))]}"
        return urls


def _service_argv(svc: dict[str, Any], entrypoint: list[str], cmd: list[str]) -> list[str]:
    words = svc.get("entrypoint", entrypoint)
    words = words if isinstance(words, list) else shlex.split(words)
    command = svc.get("command", cmd)
    command = command if isinstance(command, list) else shlex.split(command)
    return [str(w) for w in [*words, *command]]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    final = dockerfile_instructions(DEPLOY / "Dockerfile")
    image = {k: v for k, v in final}
    entrypoint, cmd = exec_form(image["ENTRYPOINT"]), exec_form(image["CMD"])
    healthcheck = exec_form(image["HEALTHCHECK"].split("CMD", 1)[1].strip())
    image_env = dict(re.findall(r"(\w+)=(\S+)", image["ENV"]))
    argvs = {name: _service_argv(svc, entrypoint, cmd)
             for name, svc in services.items() if name != "prometheus"}
    provider_env = env_file(DEPLOY / "examples" / "provider.env")
    ports = sorted(set().union(*(Localizer.ports_in(a) for a in argvs.values())))
    fresh = free_ports(len(ports) + 4)
    data = tmp_path_factory.mktemp("bwpool")
    loc = Localizer(data / "compose", dict(zip(ports, fresh)))
    procs: dict[str, Proc] = {}

    def proc(name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        procs[name] = Proc(name, argv, {**loc.env(image_env), **(env or {})}, data / "logs" / name)
        return procs[name]

    try:
        chain = proc("chain", loc.argv(argvs["chain"])).start()
        chain_check = loc.argv([str(w) for w in services["chain"]["healthcheck"]["test"][1:]])
        wait_for("the chain's health check", lambda: subprocess.run(
            chain_check, capture_output=True, check=False).returncode == 0, STARTUP_SECONDS, [chain])

        init = proc("init", loc.argv(argvs["init"])).start()

        # The image's own command on a data directory made from the examples (the README's
        # single-validator steps): `validator init`, the example config and spec, then
        # ENTRYPOINT + CMD with /var/lib/bwpool here.
        single = data / "single"
        single_loc = Localizer(single)
        p2p, http = fresh[-2:]
        others = [data / "others" / f"v{i}" for i in range(1, 4)]
        entries = init_validators([single, *others], single / "network.toml",
                                  [p2p, http, *free_ports(6)])
        config = (DEPLOY / "examples" / "validator.config.toml").read_text()
        config = config.replace("/ip4/0.0.0.0/tcp/7001", f"/ip4/127.0.0.1/tcp/{p2p}")
        (single / "config.toml").write_text(config.replace("http_port = 8001", f"http_port = {http}"))
        spec = (DEPLOY / "examples" / "network.toml").read_text()
        spec = re.sub(r"(?m)^genesis_time = \d+", f"genesis_time = {int(time.time()) + 5}", spec)
        (single / "network.toml").write_text(
            fill_example_network(spec, entries, f"http://127.0.0.1:{loc.ports[8899]}"))
        single_env = single_loc.env(image_env)
        procs["image"] = Proc("image", single_loc.argv([*entrypoint, *cmd]), single_env,
                              data / "logs" / "image").start()

        init.process.wait(timeout=90)  # type: ignore[union-attr]
        assert init.process.returncode == 0, init.describe()  # type: ignore[union-attr]
        for name in sorted(services):
            if re.fullmatch(r"[vp]\d+", name):
                env = loc.env({k: str(v) for k, v in (services[name].get("environment") or {}).items()})
                proc(name, loc.argv(argvs[name]), env).start()
        # The provider unit's ExecStart with the example provider.env, on this machine: its
        # documentation address is 127.0.0.1, its own two ports fresh ones, its state
        # directory the compose data directory, and it claims through v0.
        own = {int(provider_env["BWPOOL_LISTEN"].rsplit("/", 1)[1]), int(provider_env["BWPOOL_DATA_PORT"])}
        unit_loc = Localizer(loc.data_dir, {**loc.ports, **dict(zip(sorted(own), fresh[-4:-2]))})
        v0 = next(w for w in argvs["init"] if w.startswith("v0="))
        unit_env = {**provider_env, "BWPOOL_PROVIDE_ARGS":
                    f"--auto-claim --validator http://203.0.113.10:{v0.rsplit(':', 1)[1]}"}
        argv = unit_loc.argv(systemd_exec(DEPLOY / "systemd" / "bwpool-provider.service", unit_env))
        assert argv[0] == "/opt/bwpool/venv/bin/validator"
        argv[0] = str(VENV_BIN / "validator")
        proc("unit-provider", argv).start()
        yield Network(data, loc, procs, compose, healthcheck, f"http://127.0.0.1:{http}")
    finally:
        for p in procs.values():
            if p.running():
                p.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for p in procs.values():
            if p.process is not None:
                try:
                    p.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.process.kill()
                    p.process.wait()


def test_compose_validators_answer_healthz(network: Network) -> None:
    urls = network.validator_urls()
    assert sorted(urls) == ["v0", "v1", "v2", "v3"]
    live = [network.procs[n] for n in urls]
    for name, url in urls.items():
        answer = wait_for(f"{name} /healthz", functools.partial(healthz_answer, url), STARTUP_SECONDS, live)
        # The image's HEALTHCHECK, with this service's BWPOOL_CONFIG, agrees with /healthz
        # as it was just before or just after (it turns 200 once the peers are connected).
        check = subprocess.run(network.loc.argv(network.image_healthcheck),
                               env={**os.environ, **network.procs[name].env},
                               capture_output=True, text=True, timeout=30, check=False)
        after = healthz_answer(url)
        assert (check.returncode == 0) in {answer["status"] == 200,
                                           after is not None and after["status"] == 200}, \
            (answer, after, check.stderr)
    # The spec init wrote (from `validator init`'s entries) lets them find each other...
    def peers() -> bool:
        counts = []
        for url in urls.values():
            status, body = http_get(url + "/status")
            peers = json.loads(body)["peers"] if status == 200 else None
            if isinstance(peers, dict):  # by kind, as issue 12 item 4 has it
                peers = peers.get("validators", sum(v for v in peers.values() if isinstance(v, int)))
            counts.append(peers)
        return all(isinstance(c, int) and c >= 3 for c in counts) or None  # type: ignore[return-value]
    wait_for("each validator to see the other three", peers, STARTUP_SECONDS, live)
    # ...and, with a quorum of peers, each says it is healthy.
    wait_for("every validator's /healthz 200", lambda: all(
        (a := healthz_answer(u)) is not None and a["status"] == 200 for u in urls.values()),
        STARTUP_SECONDS, live)
    # ...and the pool init made is the spec's.
    pool = json.loads((network.loc.data_dir / "pool" / "pool.json").read_text())
    status, body = http_get(urls["v0"] + "/network")
    assert status == 200 and json.loads(body)["pool"]["pool"] == pool["pool"]


def test_compose_providers_serve_and_register(network: Network) -> None:
    providers = [n for n in network.procs if re.fullmatch(r"p\d+", n)] + ["unit-provider"]
    assert len(providers) == 5
    for name in providers:
        p = network.procs[name]
        line = wait_for(f"{name}'s multiaddr", functools.partial(lambda proc: proc.stdout().strip(), p), STARTUP_SECONDS, [p])
        assert re.fullmatch(r"/ip4/127\.0\.0\.1/tcp/\d+/p2p/\w+", line.splitlines()[0]), line
    urls = network.validator_urls()

    def registered() -> int | None:
        status, body = http_get(urls["v0"] + "/status")
        count = json.loads(body).get("providers") if status == 200 else None
        return count if isinstance(count, int) and count >= 5 else None
    wait_for("v0 to hold all 5 providers' registrations", registered, STARTUP_SECONDS,
             [network.procs[n] for n in providers])


def test_image_command_runs_single_validator(network: Network) -> None:
    p = network.procs["image"]
    answer = wait_for("the image's default command to answer /healthz",
                      lambda: healthz_answer(network.single_url), STARTUP_SECONDS, [p])
    check = subprocess.run(network.loc.argv(network.image_healthcheck),
                           env={**os.environ, **p.env}, capture_output=True, text=True,
                           timeout=30, check=False)
    assert (check.returncode == 0) == (answer["status"] == 200), (answer, check.stderr)
    status, body = http_get(network.single_url + "/network")
    assert status == 200 and json.loads(body)["n"] == 4  # the example spec, filled in


def dashboard_metric_names() -> set[str]:
    """Every metric name the Grafana dashboard's queries read."""
    board = json.loads((DEPLOY / "grafana" / "bwpool-validators.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", ())]
    variables = [json.dumps(v.get("query")) for v in board["templating"]["list"]]
    assert exprs, "the dashboard has no queries"
    return set(re.findall(r"\b((?:bwpool|process)_[a-z_]+)\b", " ".join(exprs + variables)))


def test_prometheus_targets_serve_metrics_the_dashboard_reads(network: Network) -> None:
    """Each target of prometheus.yml serves /metrics (parsed by prometheus_client's parser),
    and every metric the dashboard in deploy/grafana/ reads is announced there."""
    from prometheus_client.parser import text_string_to_metric_families

    prom = load_yaml(DEPLOY / "prometheus.yml")
    (job,) = prom["scrape_configs"]
    targets = [network.loc.word(t) for sc in job["static_configs"] for t in sc["targets"]]
    wanted = dashboard_metric_names()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for target in targets:
        wait_for(f"{target} up", functools.partial(healthz_answer, f"http://{target}"), STARTUP_SECONDS)
        status, body = http_get(f"http://{target}{job['metrics_path']}")
        assert status == 200, (target, status)
        families = list(text_string_to_metric_families(body.decode()))
        names = {f.name + s for f in families for s in ("", *suffixes.get(f.type, ()))}
        assert not wanted - names, f"{target} lacks what the dashboard reads: {wanted - names}"


def test_init_again_keeps_everything(network: Network) -> None:
    """`docker compose up` on an existing volume runs `init` again: it must keep the keys,
    the spec and the pool, and exit 0 so that the validators start."""
    data = network.loc.data_dir
    kept = {path: path.read_bytes() for path in sorted(data.glob("**/*.key"))
            + [data / "network.toml", data / "pool" / "pool.json", data / "v0" / "config.toml"]}
    init = network.procs["init"]
    again = subprocess.run(init.argv, env={**os.environ, **init.env}, capture_output=True,
                           text=True, timeout=60, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing to do" in again.stdout, again.stdout
    assert {path: path.read_bytes() for path in kept} == kept


def test_sigterm_stops_everything_cleanly(network: Network) -> None:
    """Last in this module: SIGTERM, the stop signal of the units and of compose, ends every
    long-running process with exit 0 well within their stop timeouts (TimeoutStopSec=30s,
    stop_grace_period: 20s). (Log lines printed while stopping are issue 12 item 5's.)"""
    long_running = [p for name, p in network.procs.items() if name != "init"]
    for p in long_running:
        assert p.running(), p.describe()
        p.process.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    for p in long_running:
        code = p.process.wait(timeout=20)  # type: ignore[union-attr]
        assert code == 0, p.describe()
