"""A minimal project: its own data in SQLite, its invoice numbers from Docnum."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = True
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = ["invoices"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Where invoice numbers come from: the service, a key with the "issue" scope, and the series.
DOCNUM_URL = os.environ.get("DOCNUM_URL", "http://127.0.0.1:8000")
DOCNUM_API_KEY = os.environ.get("DOCNUM_API_KEY", "")
DOCNUM_INVOICE_SERIES = os.environ.get("DOCNUM_INVOICE_SERIES", "invoice")
