"""The request scope: one database session per request, committed or rolled back here only."""

from __future__ import annotations

from anyio import to_thread
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import db.session
from keyplane import runtime


class RequestScope:
    """Opens the request's session and owns its transaction.

    The outcome is decided when the response starts, *before* it is sent: a client
    that has seen 2xx can rely on the change being committed (the very next request,
    on any worker, sees it). A status of 400 or more rolls back; so does an exception,
    which the error handlers above then turn into a 500. If the commit itself fails,
    nothing has been sent yet, so the client gets that 500 rather than a false 2xx.
    """

    def __init__(self, app: ASGIApp, *, runtime: runtime.Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = self.runtime.sessions()
        runtime_token = runtime.bind(self.runtime)
        session_token = db.session.bind(session)
        decided = False

        async def send_after_deciding(message: Message) -> None:
            nonlocal decided
            if message["type"] == "http.response.start" and not decided:
                decided = True
                if message["status"] < 400:
                    await to_thread.run_sync(session.commit)
                else:
                    await to_thread.run_sync(session.rollback)
            await send(message)

        try:
            await self.app(scope, receive, send_after_deciding)
        except BaseException:
            if not decided:
                decided = True
                await to_thread.run_sync(session.rollback)
            raise
        finally:
            await to_thread.run_sync(session.close)
            db.session.unbind(session_token)
            runtime.unbind(runtime_token)
