"""A client that passes on the positions in the logs its requests reached (Ketnoi-Position),
as every client of several services should."""

from __future__ import annotations

from typing import Any

import httpx

from services.runtime.positions import HEADER, merged, parse, render


class PositionCarrier:
    """Remembers the highest position of each log named by a response, and names them all in
    the next request. One per client (not shared between threads)."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}

    def on_request(self, request: httpx.Request) -> None:
        if self.positions:
            request.headers[HEADER] = render(self.positions)

    def on_response(self, response: httpx.Response) -> None:
        value = response.headers.get(HEADER)
        if value:
            self.positions = merged(self.positions, parse([value]))

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx client that carries the positions."""
        hooks = {"request": [self.on_request], "response": [self.on_response]}
        return httpx.Client(event_hooks=hooks, **kwargs)
