"""What a request needs beyond its session: settings, derived secrets, the clock."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from keyplane.crypto import Secrets
from keyplane.settings import Settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    secrets: Secrets
    sessions: Callable[[], Session]  # a sessionmaker, or the tests' stand-in

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)


_current: ContextVar[Runtime] = ContextVar("keyplane_runtime")


def current() -> Runtime:
    return _current.get()


def bind(runtime: Runtime) -> object:
    return _current.set(runtime)


def unbind(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
