"""The command line itself: entry points, one CLI shape, errors, logs."""
import subprocess
import sys


def test_python_dash_m_omnisource_runs_the_cli():
    for module in ("omnisource", "omnisource.cli"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "import-web" in out.stdout and "student" in out.stdout
