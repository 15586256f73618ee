"""Static checks of the project's Python: no undefined names, unused imports or syntax errors."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_no_errors():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run(
        [str(ruff), "check", "--select", "F,E9", "--no-cache", "dags", "include", "plugins", "bench", "tests", "feature_repo"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
