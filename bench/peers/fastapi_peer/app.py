"""Benchmark peer: a plain FastAPI + SQLAlchemy ORM app, written the way FastAPI's tutorial teaches.

Sync ``def`` path operations, a ``Depends(get_db)`` session per request, declarative ORM models
with a relationship, Pydantic bodies/responses and the tutorial's OAuth2 bearer JWT
``get_current_user`` dependency. Honest, idiomatic, untuned: the yardstick Keyplane must beat.

Settings come from the environment: ``BENCH_DATABASE_URL`` (a SQLAlchemy URL) and
``BENCH_JWT_SECRET`` (HS256). Tables are created by ``seed.py``, not at import.
"""

import hashlib
import os
from datetime import UTC, datetime
from typing import Annotated

import jwt
from fastapi import Depends, FastAPI, HTTPException, Query, status
from fastapi.security import OAuth2PasswordBearer
from jwt.exceptions import InvalidTokenError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import DateTime, ForeignKey, String, create_engine, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    sessionmaker,
)

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "sqlite:///./bench_fastapi.db")
SECRET_KEY = os.environ.get("BENCH_JWT_SECRET", "change-me")
ALGORITHM = "HS256"

connect_args = {"check_same_thread": False} if DATABASE_URL.startswith("sqlite") else {}
# A pool sized for the thread pool sync path operations run in: with SQLAlchemy's
# default (5, and 10 more that are closed after each use) requests queue for a connection.
engine = create_engine(DATABASE_URL, connect_args=connect_args, pool_size=20)
SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True, index=True)

    api_keys: Mapped[list["ApiKey"]] = relationship(back_populates="owner")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    description: Mapped[str | None] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    owner: Mapped[User] = relationship(back_populates="api_keys")
    permissions: Mapped[list["Permission"]] = relationship(back_populates="api_key")


class Permission(Base):
    __tablename__ = "permissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))

    api_key: Mapped[ApiKey] = relationship(back_populates="permissions")


# Pydantic models


class VerifyRequest(BaseModel):
    key: str = Field(max_length=200)
    permissions: list[str] = []


class VerifyResponse(BaseModel):
    valid: bool
    code: str
    key_id: int | None = None
    permissions: list[str] | None = None
    expires_at: datetime | None = None


class ApiKeyUpdate(BaseModel):
    description: str | None = None
    expires_at: datetime | None = None


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    description: str | None
    expires_at: datetime | None
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


# Dependencies


def get_db():
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


oauth2_scheme = OAuth2PasswordBearer(tokenUrl="token")


def get_current_user(
    token: Annotated[str, Depends(oauth2_scheme)], db: Annotated[Session, Depends(get_db)]
) -> User:
    credentials_exception = HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail="Could not validate credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )
    try:
        payload = jwt.decode(token, SECRET_KEY, algorithms=[ALGORITHM])
        username = payload.get("sub")
        if username is None:
            raise credentials_exception
    except InvalidTokenError:
        raise credentials_exception from None
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        raise credentials_exception
    return user


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def as_aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were stored as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


app = FastAPI()


@app.post("/v1/keys/verify", response_model=VerifyResponse)
def verify_key(
    body: VerifyRequest,
    caller: Annotated[User, Depends(get_current_user)],  # the verifying service, signed in
    db: Annotated[Session, Depends(get_db)],
):
    api_key = db.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(body.key)))
    if api_key is None:
        return VerifyResponse(valid=False, code="NOT_FOUND")
    if api_key.revoked_at is not None:
        return VerifyResponse(valid=False, code="REVOKED")
    if api_key.expires_at is not None and as_aware(api_key.expires_at) <= datetime.now(UTC):
        return VerifyResponse(valid=False, code="EXPIRED")
    held = [permission.name for permission in api_key.permissions]
    if any(name not in held for name in body.permissions):
        return VerifyResponse(valid=False, code="INSUFFICIENT_PERMISSIONS")
    return VerifyResponse(
        valid=True,
        code="VALID",
        key_id=api_key.id,
        permissions=held,
        expires_at=api_key.expires_at,
    )


@app.patch("/v1/api-keys/{item_id}", response_model=ApiKeyOut)
def update_api_key(
    item_id: int,
    body: ApiKeyUpdate,
    current_user: Annotated[User, Depends(get_current_user)],
    db: Annotated[Session, Depends(get_db)],
):
    api_key = db.get(ApiKey, item_id)
    if api_key is None or api_key.user_id != current_user.id:
        raise HTTPException(status_code=404, detail="API key not found")
    for field, value in body.model_dump(exclude_unset=True).items():
        setattr(api_key, field, value)
    db.commit()
    db.refresh(api_key)
    return api_key


@app.get("/v1/api-keys", response_model=list[ApiKeyOut])
def list_api_keys(
    current_user: Annotated[User, Depends(get_current_user)],
    db: Annotated[Session, Depends(get_db)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
):
    query = (
        select(ApiKey)
        .where(ApiKey.user_id == current_user.id)
        .order_by(ApiKey.id)
        .offset(offset)
        .limit(limit)
    )
    return db.scalars(query).all()
