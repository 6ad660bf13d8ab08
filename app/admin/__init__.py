"""The admin portal at ``/admin``: server-rendered pages over the same SQL as the JSON API.

Signed in with an admin key, an admin manages the series, the ledger, the keys and reads the audit
trail of that key's tenant, and nothing of any other tenant.
"""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from app.admin import (
    account,
    audit_pages,
    by_hand_pages,
    key_pages,
    ledger_pages,
    preview,
    series_pages,
)
from app.admin.session import Sessions
from app.admin.web import STATIC_DIR, STATIC_PATH
from app.settings import Settings


def install(app: FastAPI, settings: Settings) -> None:
    app.state.admin_sessions = Sessions(settings)
    # The series list and form routes come before "/series/{name}", which would match them too.
    for module in (
        account,
        series_pages,
        ledger_pages,
        by_hand_pages,
        key_pages,
        audit_pages,
        preview,
    ):
        app.include_router(module.router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="admin-static")
    app.include_router(account.fallback)
