"""Work each worker process does off the request path: writing the notes of key use
and the counts of verifies, dropping rate-limit windows that have ended (when they
live in the database) and counts older than their retention."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from keyplane import db
from keyplane.db.limits import Windows
from keyplane.db.session import Sessions
from keyplane.db.usage import Usage

logger = logging.getLogger("keyplane.background")


PURGE_EVERY_SECONDS = 60.0


class Flusher:
    """Writes the worker's notes of key use and counts of verifies every ``interval`` s,
    and at shutdown; once a minute, drops the database's rate-limit windows that have
    ended and the counts older than ``retention``."""

    def __init__(
        self,
        usage: Usage,
        sessions: Sessions,
        interval: float,
        windows: Windows,
        retention: timedelta = timedelta(days=90),
    ) -> None:
        self.usage = usage
        self.sessions = sessions
        self.interval = interval
        self.windows = windows
        self.retention = retention
        self._purged = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keyplane-last-used", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def flush(self) -> None:
        notes = self.usage.take()
        if not notes:
            return
        try:
            with self.sessions.writing() as session, session.begin():
                db.usage.write(session, notes)
        except SQLAlchemyError as error:
            # The database is busy or away: the notes wait for the next round.
            logger.warning("key use not written yet (%s); will retry", type(error).__name__)
            self.usage.give_back(notes)
        except Exception:
            # A bug: said loudly, and the thread lives on, so later notes are written.
            logger.exception("key use not written: unexpected error; will retry")
            self.usage.give_back(notes)

    def purge(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        try:
            with self.sessions.writing() as session, session.begin():
                if self.windows.in_database:
                    db.limits.purge_windows(session, now)
                db.usage.forget_before(session, now, self.retention)
        except SQLAlchemyError as error:
            logger.warning("old windows and counts not dropped yet (%s)", type(error).__name__)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
            if time.monotonic() - self._purged >= PURGE_EVERY_SECONDS:
                self._purged = time.monotonic()
                self.purge()
