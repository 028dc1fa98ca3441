"""The v1 contract's FastAPI application, written literally from its document.

The document describes one operation, ``PATCH /v1/api-keys/{item_id}``: its path
parameter, its ``X-API-Key`` header, its ``APIKeyRecordCreate`` body and its
``APIKeyRecordRead`` answer, behind ``OAuth2PasswordBearer``. This is that application,
with one change: the bearer token is not checked (any token will do), since the twin
has no users. It keeps its keys in memory (``KEYS``), so that a test can give it the
same key Keyplane holds, and answers a missing one as Keyplane does.

``tests/test_twin.py`` sends both the same requests and expects the same answers, but
for ``DEVIATIONS``: what Keyplane answers differently on purpose.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Optional

from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel


class APIKeyRecordCreate(BaseModel):
    expires_at: Optional[datetime] = None  # noqa: UP045 - as the document writes it
    description: Optional[str] = None  # noqa: UP045


class APIKeyRecordRead(BaseModel):
    id: int
    key_prefix: str
    user_id: int
    status: Optional[str]  # noqa: UP045
    created_at: Optional[datetime]  # noqa: UP045
    expires_at: Optional[datetime]  # noqa: UP045
    description: Optional[str]  # noqa: UP045
    full_key: Optional[str] = None  # noqa: UP045


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/v1/auth/token")
app = FastAPI()
KEYS: dict[int, APIKeyRecordRead] = {}


@app.patch("/v1/api-keys/{item_id}", response_model=APIKeyRecordRead)
def update(
    item_id: int,
    body: APIKeyRecordCreate,
    token: str = Depends(oauth2_scheme),
    x_api_key: Optional[str] = Header(None),  # noqa: UP045
) -> APIKeyRecordRead:
    record = KEYS.get(item_id)
    if record is None:
        raise HTTPException(status_code=404, detail="API key not found")
    changed = record.model_copy(update=body.model_dump(exclude_unset=True))
    expires = changed.expires_at
    if expires is not None and expires.replace(tzinfo=expires.tzinfo or UTC) <= datetime.now(UTC):
        changed = changed.model_copy(update={"status": "expired"})
    KEYS[item_id] = changed
    return changed
