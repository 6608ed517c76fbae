"""Private RabbitMQ nodes with mutual-TLS listeners, for the tests and `nox -s dev`: one node,
or a cluster of several.

A node is isolated from the machine's default one: its own node name, ports, private epmd,
Erlang cookie, config, data and logs, all inside one base folder. Plain AMQP is off; the TLS
listener on 127.0.0.1 requires a client certificate signed by the broker's own CA. The nodes of
a cluster share that CA, the login, the cookie and the epmd, and each has its own server
certificate, ports, data and logs.

    with start_broker(Path(".dev/broker"), purpose="dev") as node:
        env = node.client_env()  # AMQP_URL, AMQP_CA_CERT_FILE, AMQP_CLIENT_CERT_FILE, ...

    with start_cluster(Path(".dev/cluster"), size=3) as cluster:  # three nodes, one cluster
        env = cluster.client_env()  # AMQP_URL lists the three nodes

`python -m deploy.broker [DIR] [--nodes 3]` runs one until Ctrl-C and prints its client
environment.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import quote

import trustme

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# The scripts themselves, not the /usr/sbin wrappers: those switch to the `rabbitmq` user and
# its home, i.e. another Erlang cookie and data folder.
SERVER = RABBITMQ_BIN / "rabbitmq-server"
CTL = RABBITMQ_BIN / "rabbitmqctl"
INSTALL_COMMAND = "apt-get install -y rabbitmq-server"

# Below the ephemeral range (32768-60999): a port from there can be taken by an outgoing
# connection while the node is down, and a restart on the same ports then fails.
PORT_RANGE = range(20000, 32000)
DEFAULT_NODE_PORTS = frozenset({25672})  # the default node's dist port, even while it is down
HOST = "localhost"  # the name on the server certificate
USER = "relay"
CLIENT_NAME = "event-relay-client"
# Every process we launch carries this variable, so a /proc scan finds whatever survived a stop
# (a detached epmd, an orphaned beam) without guessing from command lines.
MARKER_VAR = "RELAY_BROKER_DIR"
MARKER_FILE = ".relay-broker"  # a base folder we may wipe and reuse

_node_numbers = itertools.count(1)


class BrokerError(RuntimeError):
    """The local RabbitMQ node cannot be installed, started, driven or stopped."""


def ensure_rabbitmq_installed(*, install: bool) -> None:
    """Make sure rabbitmq-server is installed; with `install`, install it when root with apt."""
    if SERVER.exists():
        return
    if not (install and os.geteuid() == 0 and shutil.which("apt-get")):
        raise BrokerError(
            f"{SERVER} is missing: install RabbitMQ with `{INSTALL_COMMAND}` (as root)"
        )
    # Debian starts the default node after installing it; we never touch that node.
    print(f"deploy.broker: {SERVER} is missing, running {INSTALL_COMMAND}", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "rabbitmq-server"], check=True, env=env)
    if not SERVER.exists():
        raise BrokerError(f"{INSTALL_COMMAND} ran but {SERVER} is still missing")


# --- certificates --------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a node: its CA, the server's certificate and key, one client's."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _write_leaf(cert: trustme.LeafCert, cert_path: Path, key_path: Path) -> None:
    _write(cert_path, b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    _write(key_path, cert.private_key_pem.bytes(), 0o600)


class LocalCa:
    """A new CA with one client certificate, in `directory`; it issues each node's server cert."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._ca = trustme.CA(organization_name="event-relay test CA")
        self.ca_cert = _write(directory / "ca.pem", self._ca.cert_pem.bytes())
        self.client_cert, self.client_key = directory / "client.pem", directory / "client.key"
        _write_leaf(
            self._ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME),
            self.client_cert,
            self.client_key,
        )

    def issue_server(self, directory: Path) -> TlsFiles:
        """A server certificate of its own for one node (SANs localhost and 127.0.0.1)."""
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        cert, key = directory / "server.pem", directory / "server.key"
        _write_leaf(self._ca.issue_cert(HOST, "127.0.0.1"), cert, key)
        return TlsFiles(self.ca_cert, cert, key, self.client_cert, self.client_key)


def issue_foreign_client(directory: Path) -> tuple[Path, Path, Path]:
    """A client cert from a second CA that no node trusts: (cert, key, that CA's cert).

    Present the cert to test an untrusted client; trust only that CA to test a client that
    does not trust the server.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="foreign CA")
    cert, key = directory / "foreign-client.pem", directory / "foreign-client.key"
    _write_leaf(ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME), cert, key)
    return cert, key, _write(directory / "foreign-ca.pem", ca.cert_pem.bytes())


# --- ports and processes -------------------------------------------------------------------


def free_port(*, exclude: frozenset[int] = frozenset()) -> int:
    """A port in PORT_RANGE that nothing listens on, from a random start."""
    start = random.randrange(len(PORT_RANGE))  # noqa: S311 - spreading, not security
    for i in range(len(PORT_RANGE)):
        port = PORT_RANGE[(start + i) % len(PORT_RANGE)]
        if port in exclude or port in DEFAULT_NODE_PORTS:
            continue
        # 0.0.0.0 is the strictest check: it also fails when the port is bound on 127.0.0.1
        # only, and the dist port listens on every interface anyway.
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # noqa: S104 - a probe, closed at once
            except OSError:
                continue
        return port
    raise BrokerError(f"no free port in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")


def _marked_pids(marker: str) -> list[int]:
    """Live processes whose environment holds MARKER_VAR=marker."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def live_pids_of(base_dir: Path) -> list[int]:
    """Live processes started for the node in `base_dir`, whether or not we still hold it."""
    return [pid for pid in _marked_pids(str(base_dir.resolve())) if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has finished; only its parent's wait() is missing


def _signal(pid: int, sig: int, *, group: bool = False) -> None:
    """Send sig to pid (or its process group); fine if it is already gone."""
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(pid, sig)


def _end_process(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """Wait up to `grace` s for proc, then SIGTERM and SIGKILL its process group."""
    for sig in (None, signal.SIGTERM, signal.SIGKILL):
        if sig is not None:
            _signal(proc.pid, sig, group=True)
        try:
            proc.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # The group leader may be gone while members (a beam behind the start script) live on.
    _signal(proc.pid, signal.SIGKILL, group=True)


def _epmd_names(epmd_port: int) -> str | None:
    """The node list of the epmd on epmd_port (epmd's NAMES_REQ), or None if it is not up."""
    try:
        with socket.create_connection(("127.0.0.1", epmd_port), timeout=2) as sock:
            sock.sendall(b"\x00\x01n")  # 2-byte length, then the request byte 'n'
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
    except OSError:
        return None
    return reply[4:].decode(errors="replace")  # after epmd's own port number


def _wait_until(
    ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    """Poll ready() until it holds; fail early if proc exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise BrokerError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise BrokerError(f"{what}: not after {timeout} s")
        time.sleep(0.05)


# --- what the nodes of one broker share ----------------------------------------------------


class _Commons:
    """What every node of one broker shares: the base folder, the CA and client certificate, the
    login, the Erlang cookie (one HOME) and one private epmd. A lone node has these to itself;
    the nodes of a cluster need the same cookie and epmd to see each other."""

    def __init__(self, base_dir: Path, purpose: str) -> None:
        self.base_dir = base_dir.resolve()
        _claim_folder(self.base_dir)
        self.slug = re.sub(r"[^a-z0-9]+", "-", purpose.lower()).strip("-") or "node"
        self.password = secrets.token_urlsafe(18)
        self.ca = LocalCa(self.base_dir / "tls")
        self._ports: set[int] = set()
        self.epmd_port = self.take_port()
        self._epmd: subprocess.Popen[bytes] | None = None
        self._holders: set[int] = set()  # id() of the nodes started and not yet stop()ped
        home = self.base_dir / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        # Written before the start so the nodes and rabbitmqctl never race to create it.
        _write(home / ".erlang.cookie", secrets.token_hex(20).encode(), 0o400)
        _write(self.base_dir / "enabled_plugins", b"[].\n")
        _write(self.base_dir / "rabbitmq-env.conf", b"")
        _write(self.base_dir / "advanced.config", b"[].\n")  # not /etc/rabbitmq/advanced.config

    def take_port(self) -> int:
        """A free port no other node of this broker was given."""
        port = free_port(exclude=frozenset(self._ports))
        self._ports.add(port)
        return port

    def env(self) -> dict[str, str]:
        """The environment every node and rabbitmqctl call of this broker runs with."""
        base = self.base_dir
        # Inherited RABBITMQ_*/ERL_* settings would undo the isolation.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                MARKER_VAR: str(base),
                "HOME": str(base / "home"),
                "LC_ALL": "C.UTF-8",  # the CLI (Elixir) warns on a non-UTF-8 locale
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                # Erlang distribution listens on every interface unless told otherwise.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            }
        )
        return env

    def client_env(self, urls: list[str]) -> dict[str, str]:
        """What a function needs to publish to these nodes (AMQP_URL lists them in order)."""
        return {
            "AMQP_URL": ",".join(urls),
            "AMQP_CA_CERT_FILE": str(self.ca.ca_cert),
            "AMQP_CLIENT_CERT_FILE": str(self.ca.client_cert),
            "AMQP_CLIENT_KEY_FILE": str(self.ca.client_key),
        }

    @property
    def epmd_pid(self) -> int | None:
        return self._epmd.pid if self._epmd else None

    def hold(self, node: BrokerNode) -> None:
        """A node starts: make sure epmd runs, and keep it running until that node's stop()."""
        self._holders.add(id(node))
        if self._epmd is not None and self._epmd.poll() is None:
            return
        # Our own foreground epmd: we hold its PID. Left to Erlang, epmd starts detached
        # (`epmd -daemon`) and outlives the node with nothing telling its PID.
        (self.base_dir / "log").mkdir(mode=0o700, exist_ok=True)
        log = (self.base_dir / "log" / "epmd.out").open("ab")
        with log:
            self._epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        epmd_port = self.epmd_port
        _wait_until(lambda: _epmd_names(epmd_port) is not None, "epmd", self._epmd, timeout=10)

    def release(self, node: BrokerNode) -> None:
        """A node is done with: once none holds the broker, stop epmd and kill any survivor."""
        self._holders.discard(id(node))
        if self._holders:
            return
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            epmd.terminate()
            _end_process(epmd, grace=5)
        for pid in live_pids_of(self.base_dir):
            _signal(pid, signal.SIGKILL)


# --- a node --------------------------------------------------------------------------------


class _Broker(ABC):
    """A node or a cluster: `with` starts it, unless it runs already, and stops it after."""

    @property
    @abstractmethod
    def running(self) -> bool: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class BrokerNode(_Broker):
    """A private RabbitMQ node in `base_dir`; `start()` it, `stop()` it, or use `with`.

    Alone unless it is one of a BrokerCluster's nodes, which share the CA, login, Erlang cookie
    and epmd; each node has its own name, ports, server certificate, data and logs.
    """

    host = HOST
    user = USER

    def __init__(
        self, base_dir: Path, *, purpose: str = "test", commons: _Commons | None = None
    ) -> None:
        self._commons = commons or _Commons(base_dir, purpose)
        self.base_dir = base_dir.resolve()  # the node's own folder; the broker's when alone
        self.base_dir.mkdir(mode=0o700, exist_ok=True)
        self.node_name = f"relay-{self._commons.slug}-{os.getpid()}-{next(_node_numbers)}@localhost"
        self.tls = self._commons.ca.issue_server(self.base_dir / "tls")
        self.port = self._commons.take_port()
        self.dist_port = self._commons.take_port()
        self._server: subprocess.Popen[bytes] | None = None
        self._env = self._write_node_files()

    # -- what clients need --

    @property
    def password(self) -> str:
        return self._commons.password

    def url(self, *, host: str | None = None, port: int | None = None) -> str:
        """amqps URL with the credentials, for the default vhost."""
        return (
            f"amqps://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host or self.host}:{port or self.port}/%2F"
        )

    def client_env(self) -> dict[str, str]:
        """The environment a function needs to publish to this node."""
        return self._commons.client_env([self.url()])

    # -- life cycle --

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    @property
    def epmd_port(self) -> int:
        return self._commons.epmd_port

    @property
    def epmd_pid(self) -> int | None:
        return self._commons.epmd_pid

    @property
    def server_pid(self) -> int | None:
        return self._server.pid if self._server else None

    @property
    def log_dir(self) -> Path:
        return self.base_dir / "log"

    def start(self) -> None:
        """Start the private epmd and the node; return once it serves mTLS."""
        ensure_rabbitmq_installed(install=False)
        try:
            self.start_node()
        except BaseException:
            self.stop()
            raise

    def start_node(self) -> None:
        """Start the node (again) on the same ports and data; return once it serves mTLS."""
        self._launch()
        self._await_started()

    def _launch(self) -> None:
        if self.running:
            return
        self._commons.hold(self)
        # A node killed a moment ago may still be registered: epmd forgets it only once it sees
        # the connection close, and the wait for the new one's registration must not see it.
        deadline = time.monotonic() + 10
        while self._registered() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = (self.log_dir / "server.out").open("ab")
        with log:
            self._server = subprocess.Popen(
                [str(SERVER)],
                env=self._env,
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _await_started(self) -> None:
        assert self._server is not None
        try:
            # await_startup fails at once while the Erlang node is not yet registered with
            # epmd (the first second or so), and waits for the boot only after that.
            _wait_until(self._registered, "registering with epmd", self._server)
            self._await_serving()
        except BrokerError as exc:
            self.stop_node()
            raise BrokerError(
                f"node {self.node_name} did not start: {exc}\n"
                f"--- from its logs in {self.log_dir} ---\n"
                f"{self._log_excerpt()}"
            ) from exc

    def _await_serving(self) -> None:
        self.ctl("await_startup", "--timeout", "60", timeout=90)
        # The node reports itself started even when its listener failed (eaddrinuse):
        # check that it is really our node that answers TLS on the port.
        self._check_tls_listener()

    def join(self, seed: BrokerNode) -> None:
        """Join `seed`'s cluster, as an operator adds a new node: its own data is replaced."""
        self.ctl("stop_app")
        self.ctl("join_cluster", seed.node_name)
        self.ctl("start_app")
        self._await_serving()

    def stop_node(self) -> None:
        """Stop the node cleanly (SIGTERM/SIGKILL on a timeout); epmd keeps running."""
        server, self._server = self._server, None
        if server is None:
            return
        if server.poll() is None:
            try:
                self.ctl("stop", timeout=60)
            except BrokerError:  # unreachable: SIGTERM to the start script also stops cleanly
                _signal(server.pid, signal.SIGTERM, group=True)
        _end_process(server, grace=30)

    def kill(self) -> None:
        """`kill -9` the node (its Erlang VM and start script): a crash, nothing shut down."""
        server, self._server = self._server, None
        if server is not None:
            _signal(server.pid, signal.SIGKILL, group=True)
            server.wait()

    def stop(self) -> None:
        """Stop the node; the last of its broker's nodes also stops epmd, then kills anything
        of theirs that survived."""
        self.stop_node()
        self._commons.release(self)

    def leftover_pids(self) -> list[int]:
        """Live processes started for this node's broker (empty after `stop()`)."""
        return live_pids_of(self._commons.base_dir)

    def write_ctl_script(self, path: Path) -> Path:
        """A script running this node's rabbitmqctl (`stop_app`, `start_app`, ...), with the
        cookie, epmd and node name it needs; for people, not for the tests."""
        settings = " ".join(
            f"{name}={shlex.quote(self._env[name])}"
            for name in ("HOME", "ERL_EPMD_PORT", "ERL_EPMD_ADDRESS", "LC_ALL")
        )
        _write(path, f'#!/bin/sh\nexec env {settings} {CTL} -n {self.node_name} "$@"\n'.encode())
        path.chmod(0o755)
        return path

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """Run `rabbitmqctl -n NODE ARGS...` against this node; its stdout."""
        return self.cli(CTL, *args, timeout=timeout)

    def cli(self, tool: Path, *args: str, timeout: float = 60) -> str:
        """Run a RabbitMQ CLI tool (rabbitmqctl, rabbitmq-queues, ...) against this node."""
        try:
            done = subprocess.run(
                [str(tool), "-n", self.node_name, *args],
                env=self._env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"{tool.name} {' '.join(args)}: no answer in {timeout} s") from exc
        if done.returncode != 0:
            raise BrokerError(
                f"{tool.name} {' '.join(args)} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    # -- internals --

    def _registered(self) -> bool:
        short_name = self.node_name.split("@")[0]
        return f"name {short_name} at port" in (_epmd_names(self.epmd_port) or "")

    def _check_tls_listener(self) -> None:
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname=self.host),
            ):
                pass  # the handshake proved the server holds our server cert
        except OSError as exc:  # ssl.SSLError included
            raise BrokerError(f"no TLS listener of ours on 127.0.0.1:{self.port}: {exc}") from exc

    def _write_node_files(self) -> dict[str, str]:
        base = self.base_dir
        for sub in ("mnesia", "log"):
            (base / sub).mkdir(mode=0o700, exist_ok=True)
        tls = self.tls
        # The default user comes from the config: on first boot (empty data folder) the node
        # creates only `relay` with full permissions on `/`, and no `guest` at all. A test that
        # passes thus proves the URL's credentials are the ones used, and no well-known login
        # exists. The user survives restarts with the data folder; a joining node takes the
        # cluster's users (the same login).
        _write(
            base / "rabbitmq.conf",
            f"""\
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:{self.port}
ssl_options.cacertfile = {tls.ca_cert}
ssl_options.certfile = {tls.server_cert}
ssl_options.keyfile = {tls.server_key}
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
default_vhost = /
default_user = {self.user}
default_pass = {self.password}
""".encode(),
            0o600,
        )
        env = self._commons.env()
        env.update(
            {
                "RABBITMQ_NODENAME": self.node_name,
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"),
            }
        )
        return env

    def _log_excerpt(self, lines: int = 20) -> str:
        """The node's first error lines, else the end of its logs: why it did not start."""
        logs = sorted(self.log_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        text = [
            line
            for log in logs
            if log.is_file()
            for line in log.read_text(errors="replace").splitlines()
        ]
        # The shutdown we forced after a failed start buries the cause at the end of the log.
        errors = [ln for ln in text if "[error]" in ln]
        return "\n".join(errors[:lines] or text[-lines:])


# --- a cluster -----------------------------------------------------------------------------


class BrokerCluster(_Broker):
    """`size` private nodes in `base_dir`, joined into one RabbitMQ cluster as operators do
    (`rabbitmqctl join_cluster`); `start()` it, `stop()` it, or use `with`.

    The nodes share one CA (each has its own server certificate), one login, one Erlang cookie
    and one private epmd; each has its own name, ports, data and logs in `base_dir/node-<n>`.
    """

    def __init__(self, base_dir: Path, *, size: int = 3, purpose: str = "test") -> None:
        if size < 1:
            raise ValueError("a cluster needs a node at least")
        self._commons = _Commons(base_dir, purpose)
        self.base_dir = self._commons.base_dir
        self.nodes = [
            BrokerNode(self.base_dir / f"node-{number}", commons=self._commons)
            for number in range(1, size + 1)
        ]

    def client_env(self) -> dict[str, str]:
        """The environment a function needs: AMQP_URL lists every node, in order."""
        return self._commons.client_env([node.url() for node in self.nodes])

    def start(self) -> None:
        """Boot every node at once, then join the others to the first one."""
        ensure_rabbitmq_installed(install=False)
        try:
            for node in self.nodes:
                node._launch()
            for node in self.nodes:
                node._await_started()
            seed, *others = self.nodes
            for node in others:
                node.join(seed)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node, then epmd; kill anything of theirs that survived."""
        for node in self.nodes:
            node.stop()

    def leftover_pids(self) -> list[int]:
        return live_pids_of(self.base_dir)

    @property
    def running(self) -> bool:
        return any(node.running for node in self.nodes)

    def running_nodes(self) -> list[BrokerNode]:
        return [node for node in self.nodes if node.running]

    def node_named(self, name: str) -> BrokerNode:
        """The node called `name` (as in rabbitmqctl's output, e.g. a queue's leader)."""
        for node in self.nodes:
            if node.node_name == name:
                return node
        raise BrokerError(f"no node {name!r} in this cluster")

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl against the first running node; cluster-wide commands answer the same."""
        running = self.running_nodes()
        if not running:
            raise BrokerError("no node of the cluster is running")
        return running[0].ctl(*args, timeout=timeout)

    def leader_of(self, queue: str) -> BrokerNode:
        """The node that leads the quorum queue `queue` now."""
        listing = self.ctl("list_queues", "name", "leader", "--quiet", "--no-table-headers")
        for line in listing.splitlines():
            name, _, leader = line.partition("\t")
            if name == queue:
                return self.node_named(leader.strip())
        raise BrokerError(f"no queue {queue!r}")


def _claim_folder(base_dir: Path) -> None:
    """Make base_dir an empty folder of ours; wipe it only if an earlier node left it."""
    if base_dir.exists() and any(base_dir.iterdir()):
        if not (base_dir / MARKER_FILE).exists():
            raise BrokerError(f"{base_dir} is not empty and not a broker folder: not using it")
        for pid in _marked_pids(str(base_dir)):  # a node an earlier run failed to stop
            _signal(pid, signal.SIGKILL)
        shutil.rmtree(base_dir)
    base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (base_dir / MARKER_FILE).touch()


def start_broker(base_dir: Path, *, purpose: str = "test") -> BrokerNode:
    """A started node in base_dir (created, or wiped if an earlier node used it)."""
    node = BrokerNode(base_dir, purpose=purpose)
    node.start()
    return node


def start_cluster(base_dir: Path, *, size: int = 3, purpose: str = "test") -> BrokerCluster:
    """A started cluster of `size` nodes in base_dir (created, or wiped as for start_broker)."""
    cluster = BrokerCluster(base_dir, size=size, purpose=purpose)
    cluster.start()
    return cluster


def main(argv: list[str] | None = None) -> None:
    """Run a node (or `--nodes N` as a cluster) until Ctrl-C or SIGTERM, printing the client
    environment as shell exports."""
    parser = argparse.ArgumentParser(prog="python -m deploy.broker")
    parser.add_argument("dir", nargs="?", type=Path, default=Path(".dev/broker"))
    parser.add_argument("--nodes", type=int, default=1, help="3 for a cluster")
    args = parser.parse_args(argv)
    ensure_rabbitmq_installed(install=False)
    # SIGTERM (e.g. from nox or a terminal closing) must still reach the stop below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with BrokerCluster(args.dir, size=args.nodes, purpose="dev") as cluster:
        for name, value in cluster.client_env().items():
            print(f"export {name}='{value}'", flush=True)
        for node in cluster.nodes:
            print(f"# node {node.node_name} on port {node.port}", file=sys.stderr)
        print("# Ctrl-C stops it", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
