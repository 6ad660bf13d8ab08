"""Portal sessions: a signed cookie that names an admin key, and the CSRF token of each form.

The cookie holds a random session id and the prefix of the key that signed in, signed with
itsdangerous so that it cannot be forged or altered; it holds no secret. Every request reads the
key back from the database, so revoking the key closes its sessions at once, on every process.
The signing secret is ``session_secret`` or, when unset, one generated once and kept in
``data_dir``: processes that share neither must be given the same ``DOCNUM_SESSION_SECRET``.

A form carries an HMAC of the session id; a form from another site, or from a session that has
ended, cannot carry the right one.
"""

import functools
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request, Response
from itsdangerous import BadData, URLSafeTimedSerializer

from app.auth import Principal
from app.deps import ServicesDep
from app.problems import Forbidden
from app.settings import Settings

COOKIE = "docnum_admin"
COOKIE_PATH = "/admin"
SESSION_SECONDS = 8 * 3600
SECRET_FILE = "session-secret"  # noqa: S105 (a file name)
CSRF_FIELD = "csrf"

# The key must still exist, unrevoked, with the admin scope; read on every portal request.
SESSION_KEY = """
SELECT k.id AS key_id, k.tenant_id, t.name AS tenant, k.prefix, k.name, k.scope
FROM api_keys AS k JOIN tenants AS t ON t.id = k.tenant_id
WHERE k.prefix = $1 AND k.revoked_at IS NULL AND k.scope = 'admin'
"""


class SignInRequired(Exception):
    """No valid session: the portal answers with a redirect to the sign-in page."""


@dataclass(frozen=True, slots=True)
class Session:
    """A browser's session; ``key`` is the prefix of the admin key, None before sign-in."""

    sid: str
    key: str | None


@dataclass(frozen=True, slots=True)
class AdminSession:
    """A signed-in session and the key it acts for."""

    session: Session
    principal: Principal
    csrf: str


def load_secret(settings: Settings) -> bytes:
    """The configured secret, or the one kept in data_dir (created once, readable by us only).

    The file is written under a temporary name and linked into place, so processes starting
    together all end up reading the same complete secret.
    """
    if settings.session_secret:
        return settings.session_secret.encode()
    path = settings.data_dir / SECRET_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise RuntimeError(f"{path} holds no usable session secret; delete it to make a new one")
    return secret


class Sessions:
    """Signs and reads session cookies, and derives CSRF tokens, with one secret."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @functools.cached_property
    def _secret(self) -> bytes:
        return load_secret(self._settings)

    @functools.cached_property
    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self._secret, salt="docnum.admin.session")

    def read(self, request: Request) -> Session | None:
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        try:
            data: Any = self._serializer.loads(value, max_age=SESSION_SECONDS)
        except BadData:
            return None
        if not isinstance(data, dict):
            return None
        sid, key = data.get("sid"), data.get("key")
        if not isinstance(sid, str) or not (key is None or isinstance(key, str)):
            return None
        return Session(sid=sid, key=key)

    @staticmethod
    def new(key: str | None) -> Session:
        """A new session id, so an id seen before signing in is worthless after it."""
        return Session(sid=secrets.token_urlsafe(24), key=key)

    def save(self, response: Response, session: Session) -> None:
        response.set_cookie(
            COOKIE,
            self._serializer.dumps({"sid": session.sid, "key": session.key}),
            max_age=SESSION_SECONDS,
            path=COOKIE_PATH,
            secure=self._settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )

    def end(self, response: Response) -> None:
        response.delete_cookie(
            COOKIE,
            path=COOKIE_PATH,
            secure=self._settings.secure_cookies,
            httponly=True,
            samesite="strict",
        )

    def csrf(self, session: Session) -> str:
        return hmac.new(self._secret, b"csrf:" + session.sid.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, session: Session | None, token: object) -> Session:
        """The session, when the form's token is the one this session's forms carry."""
        if (
            session is None
            or not isinstance(token, str)
            or not hmac.compare_digest(self.csrf(session).encode(), token.encode())
        ):
            raise Forbidden(
                "This form has expired or did not come from this site. "
                "Go back, reload the page and send it again."
            )
        return session


def get_sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.admin_sessions
    return sessions


SessionsDep = Annotated[Sessions, Depends(get_sessions)]


async def principal_for(pool: asyncpg.Pool, prefix: str) -> Principal | None:
    row = await pool.fetchrow(SESSION_KEY, prefix)
    return None if row is None else Principal(**dict(row))


async def get_admin_session(
    request: Request, sessions: SessionsDep, services: ServicesDep
) -> AdminSession:
    session = sessions.read(request)
    if session is None or session.key is None:
        raise SignInRequired
    principal = await principal_for(services.pool, session.key)
    if principal is None:
        raise SignInRequired
    return AdminSession(session=session, principal=principal, csrf=sessions.csrf(session))


AdminSessionDep = Annotated[AdminSession, Depends(get_admin_session)]


async def get_checked_form(
    request: Request, sessions: SessionsDep, signed_in: AdminSessionDep
) -> dict[str, str]:
    """The posted form of a signed-in session, once its CSRF token is checked."""
    form = await request.form()
    sessions.check_csrf(signed_in.session, form.get(CSRF_FIELD))
    return {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}


CheckedFormDep = Annotated[dict[str, str], Depends(get_checked_form)]
