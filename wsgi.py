"""Production entry point: ``gunicorn wsgi:app``. The LINE sandbox is never mounted here."""
from wizard import create_app

app = create_app()
