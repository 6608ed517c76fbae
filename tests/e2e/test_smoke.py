"""The smoke test and bootstrap end to end: a real function, the TLS broker, and for bootstrap a
stand-in gcloud (tests/fake_gcloud.py) whose "deployed" function is the local one.

`python -m deploy smoke` authenticates its test alert the way each auth mode wants, the function
answers 202 and the alert is on the queue, marked as a test; a wrong secret is a failure that
says 401. `python -m deploy bootstrap` declares the topology with the operator's secret files,
deploys, and its smoke step gets a 202 through that topology.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from deploy.__main__ import main
from deploy.broker import BrokerNode
from deploy.function_process import FunctionProcess
from deploy.local import local_env
from deploy.manifest import load_manifest
from deploy.smoke import HOST, SOURCE
from tests import fake_gcloud
from tests.conftest import broker_connection_params
from tests.e2e.conftest import Route

SECRETS = {  # two values each: the smoke test uses the first, as a sender would the current one
    "bearer": "smoke-bearer-5c1e,older-bearer",
    "basic": "relay:smoke-pass-77ab,relay:older-pass",
    "query-token": "smoke-token-0f3d,older-token",
    "standard-webhooks": "whsec_" + base64.b64encode(b"smoke-standard-webhooks-key-01").decode(),
    "grafana-hmac": "smoke-grafana-key-9d2c",
}
MANIFEST = """\
defaults:
  project: relay-test-123
  region: europe-west3
  service_account: relay@relay-test-123.iam.gserviceaccount.com
  allow_unauthenticated: true
  auth: {auth}
  secrets:
    AMQP_URL: {{secret: amqp-url}}
    AMQP_CA_CERT: {{secret: amqp-ca}}
    AMQP_CLIENT_CERT: {{secret: amqp-cert}}
    AMQP_CLIENT_KEY: {{secret: amqp-key}}
    AUTH_SECRETS: {{secret: auth}}
  env: {{AMQP_EXCHANGE: {exchange}}}
functions:
  vm_isolate: {{}}
"""


def write_manifest(folder: Path, exchange: str, auth: str = "{mode: bearer}") -> Path:
    path = folder / "functions.yaml"
    path.write_text(MANIFEST.format(auth=auth, exchange=exchange))
    return path


def serve(
    start_function: Callable[..., FunctionProcess], broker: BrokerNode, manifest: Path, auth: Path
) -> FunctionProcess:
    """vm_isolate as deploy would configure it, with the test broker and an AUTH_SECRETS file."""
    [fn] = load_manifest(manifest)
    env = {**local_env(fn), **broker.client_env(), "AUTH_SECRETS_FILE": str(auth)}
    return start_function("vm_isolate", env)


@pytest.mark.parametrize("mode", list(SECRETS))
def test_the_smoke_alert_is_authenticated_as_the_mode_wants_and_is_on_the_queue_as_a_test(
    mode: str,
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    start_function: Callable[..., FunctionProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    route = make_route("vm.isolate")
    header = ", timestamp_header: X-Relay-Ts" if mode == "grafana-hmac" else ""
    manifest = write_manifest(tmp_path, route.exchange, f"{{mode: {mode}{header}}}")
    secrets = tmp_path / "auth-secrets"
    secrets.write_text(SECRETS[mode] + "\n")
    server = serve(start_function, broker, manifest, secrets)

    code = main(["--manifest", str(manifest), "smoke", "--url", server.url,
                 "--auth-file", str(secrets)])  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0, out
    event_id = re.search(r"event (smoke-[0-9a-f-]+) published to vm\.isolate", out)
    assert event_id, out
    [message] = route.messages()
    assert message.routing_key == "vm.isolate"
    assert message.properties.message_id == event_id[1]
    assert message.body["data"]["hostname"] == HOST
    assert message.body["data"]["source"] == SOURCE
    assert message.body["data"]["severity"] == "info"
    for value in SECRETS[mode].split(","):  # a password, a token, a key: none is printed
        assert value.rpartition(":")[2].removeprefix("whsec_") not in out


def test_a_smoke_alert_with_a_wrong_secret_fails_saying_401_and_publishes_nothing(
    broker: BrokerNode,
    make_route: Callable[[str], Route],
    start_function: Callable[..., FunctionProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    route = make_route("vm.isolate")
    manifest = write_manifest(tmp_path, route.exchange)
    (tmp_path / "right").write_text("the-right-token")
    (tmp_path / "wrong").write_text("a-wrong-token")
    server = serve(start_function, broker, manifest, tmp_path / "right")

    code = main(["--manifest", str(manifest), "smoke", "--url", server.url,
                 "--auth-file", str(tmp_path / "wrong")])  # fmt: skip

    out = capsys.readouterr().out
    assert code == 1
    assert "vm_isolate: FAILED, 401" in out
    assert "a-wrong-token" not in out
    assert route.messages() == []


@pytest.fixture
def channel(broker: BrokerNode) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(broker_connection_params(broker))
    yield connection.channel()
    connection.close()


def test_bootstrap_declares_the_topology_with_the_files_given_deploys_and_gets_a_202(
    broker: BrokerNode,
    start_function: Callable[..., FunctionProcess],
    channel: BlockingChannel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],  # the steps' own processes print too
) -> None:
    exchange = f"boot-{uuid.uuid4().hex[:8]}"
    manifest = write_manifest(tmp_path, exchange)
    (tmp_path / "amqp-url").write_text(broker.url())
    (tmp_path / "auth").write_text("bootstrap-token-31c9")
    files = {
        "AMQP_URL": tmp_path / "amqp-url",
        "AMQP_CA_CERT": broker.tls.ca_cert,
        "AMQP_CLIENT_CERT": broker.tls.client_cert,
        "AMQP_CLIENT_KEY": broker.tls.client_key,
        "AUTH_SECRETS": tmp_path / "auth",
    }
    server = serve(start_function, broker, manifest, tmp_path / "auth")
    cloud = tmp_path / "cloud"
    for name, value in fake_gcloud.install(cloud, url=server.url).items():
        monkeypatch.setenv(name, value)
    options = [arg for name, path in files.items() for arg in ("--secret-file", f"{name}={path}")]
    queue = f"{exchange}.vm_isolate"
    try:
        code = main(["--manifest", str(manifest), "bootstrap", "--build-dir",
                     str(tmp_path / "build"), *options])  # fmt: skip

        out = capfd.readouterr().out
        assert code == 0, out
        assert f"queue.declare {queue} (durable, x-queue-type=quorum" in out
        assert f"vm_isolate: 202 from {server.url}" in out
        method, _, body = channel.basic_get(queue, auto_ack=True)
        assert method is not None
        assert method.routing_key == "vm.isolate"
        assert json.loads(body)["data"]["source"] == SOURCE
        assert fake_gcloud.state(cloud)["functions"] == {"vm_isolate": server.url}
        assert "bootstrap-token-31c9" not in out
    finally:
        for name in (queue, f"{exchange}.dead-letter"):
            channel.queue_delete(name)
        for name in (exchange, f"{exchange}.dead-letter"):
            channel.exchange_delete(name)
