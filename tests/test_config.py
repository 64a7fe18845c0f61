"""Configuration order (defaults → instance/config.py → WIZARD_* variables) and the embedded default."""
from wizard import create_app


def test_embedded_default_uses_sqlite_and_the_sandbox(tmp_path, monkeypatch):
    for name in ("WIZARD_DATABASE_URL", "WIZARD_LINE_API_HOST", "WIZARD_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'wizard.db'}"
    assert app.config["SANDBOX"] is True
    assert app.config["LINE_API_HOST"] == "http://127.0.0.1:5001"
    # Generated once, kept in instance/, reused on the next start.
    key = app.config["SECRET_KEY"]
    assert (tmp_path / "secret_key").read_text() == key
    assert create_app({"INSTANCE_PATH": str(tmp_path)}).config["SECRET_KEY"] == key
    assert (tmp_path / "encryption_key").stat().st_mode & 0o077 == 0


def test_environment_beats_instance_config_and_turns_the_sandbox_off(tmp_path, monkeypatch):
    (tmp_path / "config.py").write_text("PUBLIC_BASE_URL = 'https://from-instance.example.com'\n"
                                        "LINE_TIMEOUT = 4\n")
    monkeypatch.setenv("WIZARD_PUBLIC_BASE_URL", "https://crm.example.com/")
    monkeypatch.setenv("WIZARD_DATABASE_URL", "postgresql+psycopg://db.example.com/crm")
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["PUBLIC_BASE_URL"] == "https://crm.example.com"
    assert app.config["LINE_TIMEOUT"] == 4
    assert app.config["SANDBOX"] is False
    assert app.config["LINE_API_HOST"] is None  # the real LINE Platform
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert "sandbox" not in {bp for bp in app.blueprints}


def test_sandbox_flag_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WIZARD_SANDBOX", "off")
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SANDBOX"] is False and app.config["LINE_API_HOST"] is None


def test_a_public_address_on_sqlite_means_real_line_not_the_sandbox(tmp_path, monkeypatch):
    """A small production on the default SQLite file must still talk to LINE and get the HTTPS warnings."""
    for name in ("WIZARD_DATABASE_URL", "WIZARD_LINE_API_HOST", "WIZARD_SANDBOX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WIZARD_PUBLIC_BASE_URL", "https://crm.example.com")
    app = create_app({"INSTANCE_PATH": str(tmp_path)})
    assert app.config["SANDBOX"] is False and app.config["LINE_API_HOST"] is None
