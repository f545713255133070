"""Who is asking: the approver named by a bearer token, from a header or the page's cookie.

The name comes from the token store, never from the request, so "approved by alice" means
whoever holds alice's token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from toolwarden.http.services import Services

TOKEN_COOKIE = "toolwarden_token"

_bearer = HTTPBearer(auto_error=False, description="`toolwarden token create NAME` prints one")
_cookie = APIKeyCookie(
    name=TOKEN_COOKIE, auto_error=False, description="set by the web page's sign-in"
)


async def approver_name(
    services: Services,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> str:
    """The authenticated approver's name, or 401."""
    token = bearer.credentials if bearer is not None else cookie
    if not token:
        raise HTTPException(
            401,
            "authentication required: send `Authorization: Bearer TOKEN` "
            "(`toolwarden token create NAME` prints one)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    name = services.tokens.verify(token)
    if name is None:
        raise HTTPException(
            401, "invalid, expired or revoked token", headers={"WWW-Authenticate": "Bearer"}
        )
    return name


Approver = Annotated[str, Depends(approver_name)]
