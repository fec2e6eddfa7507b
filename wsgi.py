"""The WSGI entry point: `gunicorn -c gunicorn.conf.py wsgi:app` and `flask --app wsgi ...` load it."""
from app import create_app

app = create_app()
