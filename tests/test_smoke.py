import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_exit_code_passes_through():
    result = subprocess.run([sys.executable, "-m", "pyinit", "--", "sh", "-c", "exit 7"], cwd=REPO)
    assert result.returncode == 7
