"""A private RabbitMQ node with a mutual-TLS listener, for the tests and `nox -s dev`.

The node is isolated from the machine's default one: its own node name, ports, private epmd,
Erlang cookie, config, data and logs, all inside one base folder. Plain AMQP is off; the TLS
listener on 127.0.0.1 requires a client certificate signed by the node's own CA.

    with start_broker(Path(".dev/broker"), purpose="dev") as node:
        env = node.client_env()  # AMQP_URL, AMQP_CA_CERT_FILE, AMQP_CLIENT_CERT_FILE, ...

`python -m deploy.broker [DIR]` runs one until Ctrl-C and prints its client environment.
"""

from __future__ import annotations

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
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


def issue_tls_files(directory: Path) -> TlsFiles:
    """A new CA, a server cert for localhost and 127.0.0.1, and a client cert, as PEM files."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="event-relay test CA")
    tls = TlsFiles(
        *(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key"))
    )
    _write(tls.ca_cert, ca.cert_pem.bytes())
    _write_leaf(ca.issue_cert(HOST, "127.0.0.1"), tls.server_cert, tls.server_key)
    _write_leaf(
        ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME), tls.client_cert, tls.client_key
    )
    return tls


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


# --- the node ------------------------------------------------------------------------------


class BrokerNode:
    """A private RabbitMQ node in `base_dir`; `start()` it, `stop()` it, or use `with`."""

    host = HOST
    user = USER

    def __init__(self, base_dir: Path, *, purpose: str = "test") -> None:
        self.base_dir = base_dir.resolve()
        _claim_folder(self.base_dir)
        slug = re.sub(r"[^a-z0-9]+", "-", purpose.lower()).strip("-") or "node"
        self.node_name = f"relay-{slug}-{os.getpid()}-{next(_node_numbers)}@localhost"
        self.password = secrets.token_urlsafe(18)
        self.tls = issue_tls_files(self.base_dir / "tls")
        self.port = free_port()
        self.dist_port = free_port(exclude=frozenset({self.port}))
        self.epmd_port = free_port(exclude=frozenset({self.port, self.dist_port}))
        self._server: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._env = self._write_node_files()

    # -- what clients need --

    def url(self, *, host: str | None = None, port: int | None = None) -> str:
        """amqps URL with the credentials, for the default vhost."""
        return (
            f"amqps://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{host or self.host}:{port or self.port}/%2F"
        )

    def client_env(self) -> dict[str, str]:
        """The environment a function needs to publish to this node."""
        return {
            "AMQP_URL": self.url(),
            "AMQP_CA_CERT_FILE": str(self.tls.ca_cert),
            "AMQP_CLIENT_CERT_FILE": str(self.tls.client_cert),
            "AMQP_CLIENT_KEY_FILE": str(self.tls.client_key),
        }

    # -- life cycle --

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    @property
    def epmd_pid(self) -> int | None:
        return self._epmd.pid if self._epmd else None

    @property
    def server_pid(self) -> int | None:
        return self._server.pid if self._server else None

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
        if self.running:
            return
        if self._epmd is None or self._epmd.poll() is not None:
            self._start_epmd()
        log = (self.base_dir / "log" / "server.out").open("ab")
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
        try:
            # await_startup fails at once while the Erlang node is not yet registered with
            # epmd (the first second or so), and waits for the boot only after that.
            short_name = self.node_name.split("@")[0]
            _wait_until(
                lambda: f"name {short_name} at port" in (_epmd_names(self.epmd_port) or ""),
                "registering with epmd",
                self._server,
            )
            self.ctl("await_startup", "--timeout", "60", timeout=90)
            # The node reports itself started even when its listener failed (eaddrinuse):
            # check that it is really our node that answers TLS on the port.
            self._check_tls_listener()
        except BrokerError as exc:
            self.stop_node()
            raise BrokerError(
                f"node {self.node_name} did not start: {exc}\n"
                f"--- from its logs in {self.base_dir / 'log'} ---\n"
                f"{self._log_excerpt()}"
            ) from exc

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

    def stop(self) -> None:
        """Stop the node and its epmd, then kill anything of ours that survived."""
        self.stop_node()
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            epmd.terminate()
            _end_process(epmd, grace=5)
        for pid in self.leftover_pids():
            _signal(pid, signal.SIGKILL)

    def leftover_pids(self) -> list[int]:
        """Live processes started for this node (empty after `stop()`)."""
        return live_pids_of(self.base_dir)

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
        try:
            done = subprocess.run(
                [str(CTL), "-n", self.node_name, *args],
                env=self._env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"rabbitmqctl {' '.join(args)}: no answer in {timeout} s") from exc
        if done.returncode != 0:
            raise BrokerError(
                f"rabbitmqctl {' '.join(args)} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def __enter__(self) -> BrokerNode:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals --

    def _start_epmd(self) -> None:
        # Our own foreground epmd: we hold its PID. Left to Erlang, epmd starts detached
        # (`epmd -daemon`) and outlives the node with nothing telling its PID.
        log = (self.base_dir / "log" / "epmd.out").open("ab")
        with log:
            self._epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        epmd_port = self.epmd_port
        _wait_until(lambda: _epmd_names(epmd_port) is not None, "epmd", self._epmd, timeout=10)

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
        for sub in ("home", "mnesia", "log"):
            (base / sub).mkdir(mode=0o700, exist_ok=True)
        # Written before the start so the node and rabbitmqctl never race to create it.
        _write(base / "home" / ".erlang.cookie", secrets.token_hex(20).encode(), 0o400)
        _write(base / "enabled_plugins", b"[].\n")
        _write(base / "rabbitmq-env.conf", b"")
        _write(base / "advanced.config", b"[].\n")  # not /etc/rabbitmq/advanced.config
        tls = self.tls
        # The default user comes from the config: on first boot (empty data folder) the node
        # creates only `relay` with full permissions on `/`, and no `guest` at all. A test that
        # passes thus proves the URL's credentials are the ones used, and no well-known login
        # exists. The user survives restarts with the data folder.
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
        # Inherited RABBITMQ_*/ERL_* settings would undo the isolation.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update(
            {
                MARKER_VAR: str(base),
                "HOME": str(base / "home"),
                "LC_ALL": "C.UTF-8",  # the CLI (Elixir) warns on a non-UTF-8 locale
                "RABBITMQ_NODENAME": self.node_name,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                # Erlang distribution listens on every interface unless told otherwise.
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                    "-kernel inet_dist_use_interface {127,0,0,1}"
                ),
                "ERL_EPMD_PORT": str(self.epmd_port),
                "ERL_EPMD_ADDRESS": "127.0.0.1",
                "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
                "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
                "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(base / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
                "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            }
        )
        return env

    def _log_excerpt(self, lines: int = 20) -> str:
        """The node's first error lines, else the end of its logs: why it did not start."""
        logs = sorted((self.base_dir / "log").iterdir(), key=lambda p: p.stat().st_mtime)
        text = [
            line
            for log in logs
            if log.is_file()
            for line in log.read_text(errors="replace").splitlines()
        ]
        # The shutdown we forced after a failed start buries the cause at the end of the log.
        errors = [ln for ln in text if "[error]" in ln]
        return "\n".join(errors[:lines] or text[-lines:])


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


def main(argv: list[str] | None = None) -> None:
    """Run a node until Ctrl-C or SIGTERM, printing the client environment as shell exports."""
    args = sys.argv[1:] if argv is None else argv
    ensure_rabbitmq_installed(install=False)
    # SIGTERM (e.g. from nox or a terminal closing) must still reach the stop below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with start_broker(Path(args[0] if args else ".dev/broker"), purpose="dev") as node:
        for name, value in node.client_env().items():
            print(f"export {name}='{value}'", flush=True)
        print(f"# node {node.node_name} on port {node.port}; Ctrl-C stops it", file=sys.stderr)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
