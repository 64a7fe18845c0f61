"""What the README promises a newcomer holds: its screenshots show the wizard as it is (as many steps as the
registry has, files that exist), it says the first install needs the network and how to reach the `flask`
command in the virtualenv, and `make reset-demo` leaves no old mail behind."""
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_screenshots_exist_and_their_alt_text_counts_the_steps_the_wizard_has(app):
    from wizard.steps.registry import registry
    with app.app_context():
        pages = len(registry()) + 1  # every step and the summary, as the wizard numbers them ("Step 1 of 9")
    images = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', README)
    assert images
    for path, alt in images:
        assert (ROOT / path).is_file(), path
        counted = re.search(r"Step (\d+) of (\d+)", alt)
        assert counted and int(counted.group(2)) == pages, (alt, pages)
        assert re.match(rf"docs/screenshots/0?{counted.group(1)}-", path), (path, alt)


def test_the_readme_says_the_first_install_needs_the_network_and_where_flask_is():
    run = README[README.index("## Run it"):README.index("## Test it")]
    assert "needs the network once" in run
    commands = README[README.index("## Commands for staff"):]
    assert ".venv/bin/flask --app wizard" in commands.replace("\n", " ")
    assert ". .venv/bin/activate" in commands


def test_reset_demo_removes_the_mails_written_as_files(tmp_path):
    make = shutil.which("make")
    outbox = tmp_path / "instance" / "outbox"
    outbox.mkdir(parents=True)
    (outbox / "20261206T220000-invitation.eml").write_text("Subject: old\n\nold mail\n")
    (tmp_path / "instance" / "wizard.db").write_text("")
    (tmp_path / "instance" / "encryption_key").write_text("kept")
    subprocess.run([make, "-s", "-f", str(ROOT / "Makefile"), "reset-demo"], cwd=tmp_path, check=True,
                   capture_output=True)
    assert not outbox.exists() and not (tmp_path / "instance" / "wizard.db").exists()
    assert (tmp_path / "instance" / "encryption_key").read_text() == "kept"  # the generated keys stay
