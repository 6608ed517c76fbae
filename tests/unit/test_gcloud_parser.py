"""Every command `deploy --dry-run` and `bootstrap --dry-run` print, and every check bootstrap
would run, gets past the real gcloud's argument parser; a mutated command does not.

All commands go to gcloud in one batch (tests/gcloud_parser.py): children of one gcloud that
loaded its CLI once, a few at a time; a sample is also run as plain `gcloud` processes, which
must give the same verdicts.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy import bootstrap
from deploy.__main__ import _parser, main
from deploy.gcloud import deploy_command
from deploy.manifest import MANIFEST, load_deployment, load_manifest
from deploy.secret_files import collect_secrets
from deploy.smoke import secret_command
from deploy.steps import PYTHON
from tests.gcloud_parser import GCLOUD, NO_GCLOUD, Verdict, parse_with_gcloud
from tests.unit.test_gcloud_commands import OVERRIDES

pytestmark = pytest.mark.skipif(GCLOUD is None, reason=NO_GCLOUD)

ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def printed_commands(argv: list[str]) -> list[list[str]]:
    """The command lines (not the comments) `python -m deploy ARGV` prints, split as a shell
    would, without their NAME=value prefixes."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(argv) == 0
    assert out.getvalue().rstrip().endswith("# dry run: nothing was run")
    commands = []
    for line in out.getvalue().splitlines():
        if line.strip() and not line.startswith("#"):
            words = shlex.split(line)
            while ASSIGNMENT.match(words[0]):
                words.pop(0)
            commands.append(words)
    return commands


def secret_files(tmp_path: Path, manifest: Path) -> list[str]:
    """--secret-file options giving every secret of the manifest a file of its own."""
    options = []
    for secret in collect_secrets(load_manifest(manifest), {}):
        path = tmp_path / secret.name
        path.write_text(f"value of {secret.name}\n")
        options += ["--secret-file", f"{secret.name}={path}"]
    return options


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    """What the dry runs print, for the repository's manifest and one with every override."""
    tmp = tmp_path_factory.mktemp("dry-runs")
    overrides = tmp / "functions.yaml"
    overrides.write_text(OVERRIDES)
    commands = []
    for manifest in (MANIFEST, overrides):
        files = secret_files(tmp, manifest)
        common = ["--manifest", str(manifest)]
        commands += printed_commands([*common, "deploy", "--dry-run", "--build-dir", str(tmp)])
        commands += printed_commands(
            [*common, "bootstrap", "--dry-run", "--vpc-range", "10.8.0.0/28", *files]
        )
    return commands


def checks_and_smoke_commands() -> Iterator[list[str]]:
    """What a real bootstrap runs besides the printed commands: its checks, and the smoke
    test's reading of AUTH_SECRETS (its URL lookup is a deploy step's check)."""
    deployment = load_deployment()
    options = bootstrap.Options(vpc_range="10.8.0.0/28")
    for step in bootstrap.plan(deployment, options, whole_manifest=True):
        if step.check:
            yield list(step.check.command.argv)
    for fn in deployment.functions:
        yield list(secret_command(fn).argv)


def mutated() -> dict[str, list[str]]:
    """Commands gcloud must refuse, each a working deploy command with one thing broken."""
    [fn] = [f for f in load_manifest() if f.name == "vm_isolate"]
    good = deploy_command(fn, Path("/b/vm_isolate"))

    def replaced(prefix: str, value: str) -> list[str]:
        return [value if arg.startswith(prefix) else arg for arg in good]

    return {
        "unknown flag": [*good, "--bogus-flag=1"],
        "a value out of range": replaced("--concurrency=", "--concurrency=5000"),
        "a value not among the choices": replaced("--ingress-settings=", "--ingress-settings=up"),
        "a malformed env list": replaced("--set-env-vars=", "--set-env-vars=NOVALUE"),
        "a secret without its version": replaced("--set-secrets=", "--set-secrets=X=secret"),
        "a misspelt command": ["gcloud", "functions", "deplyo", *good[3:]],
    }


@pytest.fixture(scope="module")
def verdicts(dry_runs: list[list[str]]) -> dict[tuple[str, ...], Verdict]:
    """gcloud's verdict on every command of this module, from one parallel batch."""
    gcloud = [argv for argv in dry_runs if argv[0] == "gcloud"]
    batch = [*gcloud, *checks_and_smoke_commands(), *mutated().values()]
    return {verdict.argv: verdict for verdict in parse_with_gcloud(batch)}


def test_every_printed_gcloud_command_gets_past_gclouds_parser(
    dry_runs: list[list[str]], verdicts: dict[tuple[str, ...], Verdict]
) -> None:
    printed = [tuple(argv) for argv in dry_runs if argv[0] == "gcloud"]
    kinds = {" ".join(argv[1:3]) for argv in printed}

    refused = [str(verdicts[argv]) for argv in printed if not verdicts[argv].parsed]

    assert refused == []
    assert kinds >= {
        "functions deploy", "services enable", "iam service-accounts", "secrets create",
        "secrets versions", "secrets add-iam-policy-binding", "compute networks",
    }  # fmt: skip


def test_every_check_bootstrap_runs_and_the_smoke_tests_secret_read_parse(
    verdicts: dict[tuple[str, ...], Verdict],
) -> None:
    commands = [tuple(argv) for argv in checks_and_smoke_commands()]

    refused = [str(verdicts[argv]) for argv in commands if not verdicts[argv].parsed]

    assert refused == []
    assert any(argv[1:3] == ("functions", "describe") for argv in commands)


@pytest.mark.parametrize("broken", list(mutated()))
def test_a_mutated_command_is_refused(
    broken: str, verdicts: dict[tuple[str, ...], Verdict]
) -> None:
    verdict = verdicts[tuple(mutated()[broken])]

    assert not verdict.parsed, verdict
    assert verdict.error.startswith("ERROR: (gcloud.functions"), verdict


def test_the_python_commands_they_print_parse_with_our_own_cli(
    dry_runs: list[list[str]],
) -> None:
    ours = [argv for argv in dry_runs if argv[0] == PYTHON]

    for argv in ours:
        assert argv[:3] == [PYTHON, "-m", "deploy"]
        _parser().parse_args(argv[3:])  # exits (fails the test) on a bad argument
    assert {
        next(a for a in argv[3:] if not a.startswith("-") and "/" not in a) for argv in ours
    } >= {
        "stage",
        "topology",
        "smoke",
    }


def test_the_forked_gcloud_gives_the_verdicts_of_plain_gcloud_processes(
    dry_runs: list[list[str]], verdicts: dict[tuple[str, ...], Verdict]
) -> None:
    printed = [argv for argv in dry_runs if argv[0] == "gcloud"]
    sample = [  # one of each verdict: a second or more each, so only these
        next(argv for argv in printed if argv[1:4] == ["secrets", "versions", "add"]),
        mutated()["unknown flag"],
    ]

    plain = parse_with_gcloud(sample, forked=False)

    assert [(v.parsed, v.error) for v in plain] == [
        (verdicts[v.argv].parsed, verdicts[v.argv].error) for v in plain
    ]
    assert [v.parsed for v in plain] == [True, False]
