"""Django settings of the peers: the database comes from ``DATABASE_URL``, as Docnum's does."""

import os

from psycopg.conninfo import conninfo_to_dict

# libpq parses the URL, so a socket directory or port given as a query parameter is kept.
_url = conninfo_to_dict(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"))

SECRET_KEY = "benchmark-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["sequences.apps.SequencesConfig", "bench.peers"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.peers.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": str(_url.get("dbname", "")),
        "USER": str(_url.get("user", "")),
        "PASSWORD": str(_url.get("password", "")),
        "HOST": str(_url.get("host", "")),
        "PORT": str(_url.get("port", "")),
        "CONN_MAX_AGE": None,  # one connection per worker, kept: the peers' best case
    }
}
LOGGING_CONFIG = None
