"""The repository's top-level `operator/` folder can never shadow the standard library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_operator_wins_even_with_the_repository_root_first_on_the_path() -> None:
    # PYTHONPATH goes ahead of the standard library, and Python imports `operator` while it
    # starts. operator/ has no __init__.py, so it is at most a namespace portion, and any
    # regular module of the same name (the stdlib's) wins.
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, voicefleet.operator.planner; print(operator.__file__)",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not done.stdout.strip().startswith(str(ROOT)), done.stdout
    assert not (ROOT / "operator" / "__init__.py").exists()
