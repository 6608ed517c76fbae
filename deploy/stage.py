"""Stage one self-contained upload folder per function: build/<name>/.

`gcloud functions deploy --source DIR` uploads that folder alone, so it must hold main.py, a copy
of shared/ and the runtime requirements.txt beside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from deploy import REPO
from deploy.manifest import Deployable

BUILD = REPO / "build"
SHARED = REPO / "shared"
REQUIREMENTS = REPO / "requirements.txt"
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
# gcloud writes a default .gcloudignore into --source when none exists; ours keeps it quiet.
GCLOUDIGNORE = ".gcloudignore\n__pycache__/\n*.pyc\n"


def stage(fn: Deployable, build_dir: Path = BUILD) -> Path:
    """(Re)create build_dir/<name>/ for fn; its path."""
    target = build_dir / fn.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(fn.source_dir, target, ignore=_IGNORED)
    if (target / "shared").exists():
        raise FileExistsError(f"{fn.source_dir} has its own shared/: it would be overwritten")
    shutil.copytree(SHARED, target / "shared", ignore=_IGNORED)
    shutil.copyfile(REQUIREMENTS, target / "requirements.txt")
    (target / ".gcloudignore").write_text(GCLOUDIGNORE)
    return target
