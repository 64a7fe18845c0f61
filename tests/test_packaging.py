"""Installing the project is quiet and complete: the wheel carries the migrations and the message catalogs,
and setuptools prints no "Package would be ignored" warning about them."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_builds_without_warnings_and_carries_its_data(tmp_path):
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-v",
                            "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    output = build.stdout + build.stderr
    assert "would be ignored" not in output, output[output.find("would be ignored") - 400:][:800]
    wheel = next(tmp_path.glob("line_connect_wizard-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "wizard/migrations/env.py" in names and "wizard/migrations/alembic.ini" in names
    assert any(name.startswith("wizard/migrations/versions/") and name.endswith(".py") for name in names)
    assert "wizard/translations/zh_Hant_TW/LC_MESSAGES/messages.po" in names
    assert "wizard/steps/registry.py" in names
