"""The JSON API under `/api/v1`: runs, logs, cancellation and approvals, for a token holder."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from toolwarden.http.auth import Approver
from toolwarden.http.errors import ErrorBody

router = APIRouter(
    responses={401: {"model": ErrorBody, "description": "no valid token"}},
)


class Identity(BaseModel):
    """Who the token names."""

    name: str


@router.get("/me", tags=["auth"])
async def whoami(name: Approver) -> Identity:
    """The approver the request's token names (what a decision would be recorded as)."""
    return Identity(name=name)
