"""Work each worker process does off the request path: writing the notes of key use."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError

import db.usage
from db.session import Sessions
from db.usage import Usage

logger = logging.getLogger("keyplane.background")


class Flusher:
    """Writes the worker's notes of key use every ``interval`` s, and at shutdown."""

    def __init__(self, usage: Usage, sessions: Sessions, interval: float) -> None:
        self.usage = usage
        self.sessions = sessions
        self.interval = interval
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

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
