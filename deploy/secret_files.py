"""The Secret Manager secrets a deployment reads, and the operator's files their values come from.

A file is named by the secret (`--secret-file event-relay-amqp-url=PATH`) or by the setting that
reads it (`--secret-file AMQP_URL=PATH`) where that setting is one secret across the functions;
`--secrets-dir DIR` holds files named either way. The values are read by gcloud from the file,
never given on a command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.manifest import Deployable


class SecretFileError(ValueError):
    """A secret's file is missing or empty, or a name given matches no secret, or two."""


@dataclass(frozen=True)
class Secret:
    """One Secret Manager secret the functions read, and who reads it as what."""

    project: str
    name: str
    settings: tuple[str, ...]  # what the functions read it as: AMQP_URL, ...
    readers: tuple[str, ...]  # the service accounts of the functions that read it
    file: Path | None  # where its first version comes from
    key: str  # how --secret-file names it: its setting where that is one secret, else its name


def secret_id(secret: str, fn: Deployable) -> tuple[str, str]:
    """(project, short name) of a manifest secret: a short name lives in the function's project."""
    if secret.startswith("projects/"):
        _, project, _, name = secret.split("/")
        return project, name
    return fn.project or "", secret


def collect_secrets(
    functions: Sequence[Deployable], files: Mapping[str, Path], folder: Path | None = None
) -> list[Secret]:
    """The distinct secrets of `functions` in the manifest's order, each with its file."""
    found: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for fn in functions:
        for setting, ref in fn.secrets.items():
            settings, readers = found.setdefault(secret_id(ref.secret, fn), ([], []))
            settings.append(setting)
            readers.append(fn.service_account or "")
    by_setting: dict[str, set[tuple[str, str]]] = {}
    for key, (settings, _) in found.items():
        for setting in settings:
            by_setting.setdefault(setting, set()).add(key)
    names = {name for _, name in found} | set(by_setting)
    if unknown := sorted(set(files) - names):
        raise SecretFileError(
            f"--secret-file {', '.join(unknown)}: neither a secret nor a secret setting "
            f"of these functions ({', '.join(sorted(names))})"
        )
    for setting, named in by_setting.items():
        if len(named) > 1 and setting in files:
            raise SecretFileError(
                f"--secret-file {setting}: {setting} is {len(named)} secrets here "
                f"({', '.join(sorted(name for _, name in named))}): name the secret instead"
            )
    secrets = []
    for (project, name), (settings, readers) in found.items():
        keys = [s for s in _unique(settings) if len(by_setting[s]) == 1] + [name]
        file = _file(keys, files, folder)
        secrets.append(Secret(project, name, _unique(settings), _unique(readers), file, keys[0]))
    return secrets


def file_of(fn: Deployable, setting: str, secrets: Iterable[Secret]) -> Path | None:
    """The operator's file for what fn reads as `setting`, if one was given."""
    ref = fn.secrets.get(setting)
    if ref is None:
        return None
    wanted = secret_id(ref.secret, fn)
    return next((s.file for s in secrets if (s.project, s.name) == wanted), None)


def _file(keys: Sequence[str], files: Mapping[str, Path], folder: Path | None) -> Path | None:
    for key in keys:
        if key in files:
            return _readable(files[key], f"--secret-file {key}")
    if folder is not None:
        for key in keys:
            if (folder / key).exists():
                return _readable(folder / key, f"--secrets-dir {key}")
    return None


def _readable(path: Path, given_as: str) -> Path:
    if not path.is_file():
        raise SecretFileError(f"{given_as}: {path} is not a file")
    if path.stat().st_size == 0:
        raise SecretFileError(f"{given_as}: {path} is empty")
    return path.resolve()


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))
