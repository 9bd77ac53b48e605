"""The OpenAI-compatible HTTP face of one replica.

Handlers translate between the wire format (`protocol`) and engine requests; everything about
batching stays in the engine thread. A request for `n` choices (or several prompts) becomes
one engine request per choice, all feeding one asyncio queue that the handler drains, so a
stream interleaves choices exactly as they are produced.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from rainier.serve.async_engine import AsyncEngine, EngineFailure, Sink
from rainier.serve.chat import ChatTemplateError, render_chat
from rainier.serve.engine import LLMEngine, RequestError
from rainier.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    ChatTokenLogprob,
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    SamplingFields,
    TopLogprob,
    Usage,
    error_response_body,
)
from rainier.serve.sampling import SamplingParams, TokenLogprob
from rainier.serve.sequence import RequestOutput


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code


def _error(status: int, message: str, type_: str, param: str | None, code: str | None) -> Response:
    return JSONResponse(error_response_body(message, type_, param, code), status_code=status)


@dataclass
class Choice:
    """One engine request's progress, accumulated for the non-streaming answer."""

    index: int
    prompt_index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    final: RequestOutput | None = None


class Fanout:
    """The engine requests behind one HTTP request, and the queue they all report into."""

    def __init__(self, engine: AsyncEngine, base_id: str, count: int) -> None:
        self.engine = engine
        self.sink: Sink = asyncio.Queue()
        self.ids = [f"{base_id}-{i}" for i in range(count)]
        self.index = {rid: i for i, rid in enumerate(self.ids)}
        self.unfinished = set(self.ids)

    def submit(self, i: int, prompt_ids: list[int], params: SamplingParams) -> None:
        self.engine.submit(self.ids[i], prompt_ids, params, self.sink)

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        while self.unfinished:
            item = await self.sink.get()
            if isinstance(item, EngineFailure):
                self.abort()
                raise APIError(
                    400 if item.client_error else 500,
                    item.message,
                    "invalid_request_error" if item.client_error else "server_error",
                )
            if item.finished:
                self.unfinished.discard(item.request_id)
            yield self.index[item.request_id], item

    def abort(self) -> None:
        for rid in self.unfinished:
            self.engine.abort(rid)
        self.unfinished.clear()


def _sse(payload: dict[str, object] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


async def _until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        continue


def create_app(
    engine: LLMEngine,
    served_model_name: str,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    async_engine = AsyncEngine(engine)
    tokenizer = engine.tokenizer
    defaults = engine.generation_defaults

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async_engine.start()
        if on_ready is not None:
            on_ready()
        yield
        await asyncio.to_thread(async_engine.stop)

    app = FastAPI(title="rainier serve", lifespan=lifespan)
    app.state.async_engine = async_engine

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> Response:
        return _error(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = loc[0] if loc else None
        where = ".".join(loc)
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
        return _error(400, message, "invalid_request_error", param, None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _error(exc.status_code, str(exc.detail), kind, None, None)

    def check_request(body: SamplingFields) -> None:
        if body.model != served_model_name:
            raise APIError(
                404,
                f"The model `{body.model}` does not exist; "
                f"this server serves `{served_model_name}`.",
                param="model",
                code="model_not_found",
            )
        field_name = body.unsupported()
        if field_name is not None:
            raise APIError(400, f"{field_name} is not supported by this server", param=field_name)

    def check_fits(prompt_ids: list[int], max_tokens: int | None, prompt_param: str) -> None:
        try:
            engine.check_request(prompt_ids, max_tokens)
        except RequestError as exc:
            param = exc.param if exc.param == "max_tokens" else prompt_param
            raise APIError(400, str(exc), param=param, code=exc.code) from None

    def sampling_params(
        body: SamplingFields, max_tokens: int, logprobs: int | None, choice: int
    ) -> SamplingParams:
        seed = None if body.seed is None else body.seed + choice
        temperature = body.temperature
        if temperature is None:
            temperature = defaults.temperature if defaults.temperature is not None else 1.0
        top_p = body.top_p if body.top_p is not None else (defaults.top_p or 1.0)
        top_k = body.top_k if body.top_k is not None else (defaults.top_k or 0)
        try:
            return SamplingParams(
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                seed=seed,
                stop=body.stop_list(),
                ignore_eos=body.ignore_eos,
                logprobs=logprobs,
                presence_penalty=body.presence_penalty,
                frequency_penalty=body.frequency_penalty,
            )
        except ValueError as exc:
            param = str(exc).split(":", 1)[0]
            raise APIError(400, str(exc), param=param) from None

    def usage(prompt_tokens: int, completion_tokens: int, cached: int) -> Usage:
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
        )

    async def collect(
        request: Request, fanout: Fanout, choices: list[Choice]
    ) -> list[Choice] | None:
        """All choices to the end, or None if the client went away first (then aborted)."""

        async def drain() -> list[Choice]:
            async for i, out in fanout.outputs():
                c = choices[i]
                c.text += out.text
                c.token_ids.extend(out.token_ids)
                c.logprobs.extend(out.logprobs)
                if out.finished:
                    c.final = out
            return choices

        work = asyncio.ensure_future(drain())
        gone = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                fanout.abort()
        return work.result() if work.done() and not work.cancelled() else None

    def completion_logprobs(entries: list[TokenLogprob], offset: int) -> CompletionLogprobs:
        result = CompletionLogprobs()
        for entry in entries:
            token = tokenizer.token_text(entry.token_id)
            result.tokens.append(token)
            result.token_logprobs.append(entry.logprob)
            top: dict[str, float] = {}
            for t, lp in entry.top:
                top.setdefault(tokenizer.token_text(t), lp)
            result.top_logprobs.append(top)
            result.text_offset.append(offset)
            offset += len(token)
        return result

    def chat_logprobs(entries: list[TokenLogprob]) -> ChatLogprobs:
        content = []
        for entry in entries:
            token = tokenizer.token_text(entry.token_id)
            tops = [
                TopLogprob(
                    token=tokenizer.token_text(t),
                    logprob=lp,
                    bytes=list(tokenizer.token_bytes(t)),
                )
                for t, lp in entry.top
            ]
            content.append(
                ChatTokenLogprob(
                    token=token,
                    logprob=entry.logprob,
                    bytes=list(tokenizer.token_bytes(entry.token_id)),
                    top_logprobs=tops,
                )
            )
        return ChatLogprobs(content=content)

    @app.get("/health")
    async def health() -> Response:
        if not async_engine.alive:
            return JSONResponse({"status": "engine stopped"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/load")
    async def load() -> dict[str, int]:
        return async_engine.load()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(async_engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=served_model_name, max_model_len=engine.max_model_len)])

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_request(body)
        prompts = _prompt_token_lists(body.prompt, tokenizer.encode)
        if body.echo and body.logprobs is not None:
            raise APIError(400, "echo together with logprobs is not supported", param="echo")
        for ids in prompts:
            check_fits(ids, body.max_tokens, "prompt")
        max_tokens = body.max_tokens or 16
        fanout = Fanout(async_engine, f"cmpl-{uuid.uuid4().hex}", len(prompts) * body.n)
        choices = [Choice(index=i, prompt_index=i // body.n) for i in range(len(fanout.ids))]
        for c in choices:
            params = sampling_params(body, max_tokens, body.logprobs, c.index % body.n)
            fanout.submit(c.index, prompts[c.prompt_index], params)
        echoes = [tokenizer.decode(ids) if body.echo else "" for ids in prompts]
        base_id = fanout.ids[0].rsplit("-", 1)[0]
        prompt_tokens = sum(len(p) for p in prompts)

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            async def stream() -> AsyncIterator[str]:
                completion_tokens, cached = 0, 0
                offsets = [len(echoes[c.prompt_index]) for c in choices]
                try:
                    for c in choices:
                        if echoes[c.prompt_index]:
                            yield _sse(
                                Completion(
                                    id=base_id,
                                    model=served_model_name,
                                    choices=[
                                        CompletionChoice(index=c.index, text=echoes[c.prompt_index])
                                    ],
                                ).model_dump()
                            )
                    async for i, out in fanout.outputs():
                        lp = None
                        if body.logprobs is not None:
                            lp = completion_logprobs(out.logprobs, offsets[i])
                        offsets[i] += len(out.text)
                        if out.finished:
                            completion_tokens += out.num_output_tokens
                            if i % body.n == 0:
                                cached += out.num_cached_tokens
                        if not (out.text or out.finished or lp):
                            continue
                        choice = CompletionChoice(
                            index=i,
                            text=out.text,
                            logprobs=lp,
                            finish_reason=out.finish_reason,
                            stop_reason=out.stop_reason,
                        )
                        yield _sse(
                            Completion(
                                id=base_id, model=served_model_name, choices=[choice]
                            ).model_dump()
                        )
                    if include_usage:
                        yield _sse(
                            Completion(
                                id=base_id,
                                model=served_model_name,
                                choices=[],
                                usage=usage(prompt_tokens, completion_tokens, cached),
                            ).model_dump()
                        )
                except APIError as exc:
                    yield _sse(error_response_body(exc.message, exc.type, exc.param, exc.code))
                finally:
                    fanout.abort()
                yield _sse("[DONE]")

            return StreamingResponse(stream(), media_type="text/event-stream")

        done = await collect(request, fanout, choices)
        if done is None:
            return Response(status_code=499)
        result = Completion(
            id=base_id,
            model=served_model_name,
            choices=[
                CompletionChoice(
                    index=c.index,
                    text=echoes[c.prompt_index] + c.text,
                    logprobs=None
                    if body.logprobs is None
                    else completion_logprobs(c.logprobs, len(echoes[c.prompt_index])),
                    finish_reason=c.final.finish_reason if c.final else None,
                    stop_reason=c.final.stop_reason if c.final else None,
                )
                for c in done
            ],
            usage=usage(
                prompt_tokens,
                sum(c.final.num_output_tokens for c in done if c.final),
                sum(c.final.num_cached_tokens for c in done if c.final and c.index % body.n == 0),
            ),
        )
        return JSONResponse(result.model_dump())

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        check_request(body)
        if body.top_logprobs is not None and not body.logprobs:
            raise APIError(400, "top_logprobs requires logprobs: true", param="top_logprobs")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            text = render_chat(
                messages, tokenizer.chat_template, tokenizer.bos_token, tokenizer.eos_token
            )
        except ChatTemplateError as exc:
            raise APIError(400, str(exc), param="messages") from None
        prompt_ids = tokenizer.encode(text, add_special_tokens=False)
        requested = body.max_completion_tokens or body.max_tokens
        check_fits(prompt_ids, requested, "messages")
        max_tokens = requested or engine.max_model_len - len(prompt_ids)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        fanout = Fanout(async_engine, f"chatcmpl-{uuid.uuid4().hex}", body.n)
        choices = [Choice(index=i, prompt_index=0) for i in range(body.n)]
        for c in choices:
            fanout.submit(c.index, prompt_ids, sampling_params(body, max_tokens, logprobs, c.index))
        base_id = fanout.ids[0].rsplit("-", 1)[0]

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def chunk(choices_: list[ChatChunkChoice], usage_: Usage | None = None) -> str:
                return _sse(
                    ChatCompletionChunk(
                        id=base_id, model=served_model_name, choices=choices_, usage=usage_
                    ).model_dump(exclude_none=False)
                )

            async def stream() -> AsyncIterator[str]:
                completion_tokens, cached = 0, 0
                try:
                    for c in choices:
                        role = ChatDelta(role="assistant", content="")
                        yield chunk([ChatChunkChoice(index=c.index, delta=role)])
                    async for i, out in fanout.outputs():
                        lp = chat_logprobs(out.logprobs) if logprobs is not None else None
                        if out.text or lp:
                            delta = ChatDelta(content=out.text)
                            yield chunk([ChatChunkChoice(index=i, delta=delta, logprobs=lp)])
                        if out.finished:
                            completion_tokens += out.num_output_tokens
                            cached += out.num_cached_tokens if i == 0 else 0
                            end = ChatChunkChoice(
                                index=i, delta=ChatDelta(), finish_reason=out.finish_reason
                            )
                            yield chunk([end])
                    if include_usage:
                        yield chunk([], usage(len(prompt_ids), completion_tokens, cached))
                except APIError as exc:
                    yield _sse(error_response_body(exc.message, exc.type, exc.param, exc.code))
                finally:
                    fanout.abort()
                yield _sse("[DONE]")

            return StreamingResponse(stream(), media_type="text/event-stream")

        done = await collect(request, fanout, choices)
        if done is None:
            return Response(status_code=499)
        result = ChatCompletion(
            id=base_id,
            model=served_model_name,
            choices=[
                ChatChoice(
                    index=c.index,
                    message=AssistantMessage(content=c.text),
                    logprobs=chat_logprobs(c.logprobs) if logprobs is not None else None,
                    finish_reason=c.final.finish_reason if c.final else None,
                    stop_reason=c.final.stop_reason if c.final else None,
                )
                for c in done
            ],
            usage=usage(
                len(prompt_ids),
                sum(c.final.num_output_tokens for c in done if c.final),
                done[0].final.num_cached_tokens if done and done[0].final else 0,
            ),
        )
        return JSONResponse(result.model_dump())

    return app


def _prompt_token_lists(
    prompt: str | list[str] | list[int] | list[list[int]],
    encode: Callable[[str], list[int]],
) -> list[list[int]]:
    if isinstance(prompt, str):
        return [encode(prompt)]
    if not prompt:
        raise APIError(400, "prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [[int(p) for p in prompt if isinstance(p, int)]]
    lists: list[list[int]] = []
    for p in prompt:
        if isinstance(p, str):
            lists.append(encode(p))
        elif isinstance(p, list):
            lists.append([int(t) for t in p])
        else:
            raise APIError(400, "prompt: mixed prompt types", param="prompt")
    return lists
