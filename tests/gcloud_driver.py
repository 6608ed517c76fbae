"""Run gcloud commands, each in a child forked from one gcloud that loaded its CLI once.

Run by gcloud's own Python (`python -S gcloud_driver.py JOBS OUT_DIR`, CLOUDSDK_ROOT_DIR set),
never imported by the tests: it starts the way the `gcloud` script does (lib/gcloud.py, then
gcloud_main), and loads the command groups and commands the batch names (their flags
included) before forking, so each child parses its command with gcloud's own code and only the
loading is shared instead of repeated. Commands come as a JSON list on stdin; child number N
writes its stderr to OUT_DIR/N.err; stdout gets {"N": exit status}.
"""

import json
import os
import sys
from typing import Any


def load_cli() -> tuple[Any, Any]:
    """gcloud's main module and its CLI, loaded as the `gcloud` script loads them."""
    sys.path.insert(0, os.path.join(os.environ["CLOUDSDK_ROOT_DIR"], "lib"))
    import gcloud as entry  # type: ignore[import-not-found]  # lib/gcloud.py

    sys.path = entry.reorder_sys_path(sys.path)  # the vendored packages first
    entry._fix_google_module()
    from googlecloudsdk import gcloud_main  # type: ignore[import-not-found]

    return gcloud_main, gcloud_main.CreateCLI([])


def preload(cli: Any, commands: list[list[str]]) -> None:
    """Load each command's groups and command (as parsing it would), once, in the parent."""
    for argv in commands:
        path: list[str] = []
        for word in argv[1:]:
            if word.startswith("-") or not cli.IsValidCommand([*path, word]):
                break
            path.append(word)


def run_child(gcloud_main: Any, cli: Any, argv: list[str], err_path: str) -> None:
    err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(err, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.argv = ["gcloud", *argv[1:]]
    code = 0
    try:
        gcloud_main.main(gcloud_cli=cli)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a crash is a verdict too
        code = 99
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    jobs, out_dir = int(sys.argv[1]), sys.argv[2]
    commands = json.load(sys.stdin)
    gcloud_main, cli = load_cli()
    preload(cli, commands)
    running: dict[int, int] = {}  # pid -> command number
    status: dict[int, int] = {}
    for number, argv in enumerate(commands):
        if len(running) >= jobs:
            pid, code = os.wait()
            status[running.pop(pid)] = os.waitstatus_to_exitcode(code)
        pid = os.fork()
        if pid == 0:
            run_child(gcloud_main, cli, argv, os.path.join(out_dir, f"{number}.err"))
        running[pid] = number
    while running:
        pid, code = os.wait()
        status[running.pop(pid)] = os.waitstatus_to_exitcode(code)
    json.dump(status, sys.stdout)


if __name__ == "__main__":
    main()
