"""Installing the project is quiet and complete: the wheel carries the migrations and the message catalogs,
and setuptools prints no "Package would be ignored" warning about them.

The wheel is not an install path (README, deploy/README.md): the app runs from a checkout, where templates/
and static/ sit beside wizard/ (``make install`` builds the wheel only to install the checkout editable). A
wheel installed on its own therefore refuses to start, saying how to install, rather than answering every page
with a missing template."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-v",
                            "-w", str(folder)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-2000:]
    return next(folder.glob("line_connect_wizard-*.whl")), build.stdout + build.stderr


def test_the_wheel_builds_without_warnings_and_carries_its_data(built):
    wheel, output = built
    assert "would be ignored" not in output, output[output.find("would be ignored") - 400:][:800]
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "wizard/migrations/env.py" in names and "wizard/migrations/alembic.ini" in names
    assert any(name.startswith("wizard/migrations/versions/") and name.endswith(".py") for name in names)
    assert "wizard/translations/zh_Hant_TW/LC_MESSAGES/messages.po" in names
    assert "wizard/steps/registry.py" in names


def test_an_app_installed_from_the_wheel_refuses_to_start_and_says_how_to_install(built, tmp_path):
    wheel, _ = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The wheel alone, with its dependencies borrowed from the test's own environment (after it on sys.path,
    # whose editable checkout is a .pth this path line does not run).
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "--no-index", "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WIZARD_", "PYTHON"))}
    started = subprocess.run(
        [python, "-c", "import wizard; print(wizard.__file__, flush=True); wizard.create_app({'TESTING': True})"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert started.stdout.startswith(str(site)), started.stdout + started.stderr  # the wheel's copy, not ours
    assert started.returncode != 0
    assert "ConfigError: templates/ and static/ are not beside the wizard package" in started.stderr
    assert "deploy/README.md" in started.stderr and "not from a wheel" in started.stderr
    assert not (site / "instance").exists()  # refused before it made anything in site-packages
