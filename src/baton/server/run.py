"""Running the app under uvicorn, with readiness turned red the moment SIGTERM (or Ctrl-C) arrives."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI


class BatonServer(uvicorn.Server):
    """uvicorn's server, telling the app it is draining as soon as a shutdown signal comes.

    uvicorn then stops accepting connections (and closes idle keep-alive ones) and waits for the requests in
    flight. Anything that still reaches the app from the signal on (``/readyz``, a new request on a busy
    connection) gets 503, and the engine finishes what it admitted."""

    def handle_exit(self, sig: int, frame) -> None:
        self.config.app.state.baton.draining = True
        super().handle_exit(sig, frame)


def serve(app: FastAPI, host: str, port: int, log_level: str = "info") -> None:
    BatonServer(uvicorn.Config(app, host=host, port=port, log_level=log_level)).run()
