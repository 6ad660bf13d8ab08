"""One Docnum client per process, built from settings on first use and shared by all threads."""

from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from docnum_client import DocnumClient


@cache
def client() -> DocnumClient:
    if not settings.DOCNUM_API_KEY:
        raise ImproperlyConfigured("Set DOCNUM_API_KEY (and DOCNUM_URL) to a Docnum issue key.")
    return DocnumClient(settings.DOCNUM_URL, settings.DOCNUM_API_KEY)
