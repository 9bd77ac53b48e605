"""One HTTP request, several engine requests: a request for `n` choices (or for several
prompts) becomes one engine request per choice, all reporting into one asyncio queue that the
handler drains, so a stream interleaves choices exactly as the engine produces them. Whatever
way the handler ends (answer sent, client gone, error), the choices still running are aborted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request

from rainier.serve.async_engine import EngineClient, EngineFailure, Sink
from rainier.serve.errors import APIError
from rainier.serve.sampling import SamplingParams, TokenLogprob
from rainier.serve.sequence import RequestOutput


@dataclass
class Choice:
    """One engine request's progress, accumulated for a non-streaming answer."""

    index: int
    prompt_index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    final: RequestOutput | None = None


class Fanout:
    def __init__(self, engine: EngineClient, base_id: str, count: int) -> None:
        self.engine = engine
        self.base_id = base_id
        self.sink: Sink = asyncio.Queue()
        self.ids = [f"{base_id}-{i}" for i in range(count)]
        self.index = {rid: i for i, rid in enumerate(self.ids)}
        self.unfinished = set(self.ids)

    def submit(self, i: int, prompt_ids: list[int], params: SamplingParams) -> None:
        self.engine.submit(self.ids[i], prompt_ids, params, self.sink)

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """(choice index, output) until every choice has finished."""
        while self.unfinished:
            item = await self.sink.get()
            if isinstance(item, EngineFailure):
                self.abort()
                if item.client_error:
                    raise APIError(400, item.message)
                raise APIError(500, item.message, "server_error")
            if item.finished:
                self.unfinished.discard(item.request_id)
            yield self.index[item.request_id], item

    def abort(self) -> None:
        for rid in self.unfinished:
            self.engine.abort(rid)
        self.unfinished.clear()

    async def collect(self, request: Request, choices: list[Choice]) -> list[Choice] | None:
        """Every choice to its end, or None if the client disconnected first."""

        async def drain() -> list[Choice]:
            async for i, out in self.outputs():
                c = choices[i]
                c.text += out.text
                c.token_ids.extend(out.token_ids)
                c.logprobs.extend(out.logprobs)
                if out.finished:
                    c.final = out
            return choices

        work = asyncio.ensure_future(drain())
        gone = asyncio.ensure_future(until_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                self.abort()
        return work.result() if work.done() and not work.cancelled() else None


async def until_disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already, so the
    next ASGI message can only be the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        continue
