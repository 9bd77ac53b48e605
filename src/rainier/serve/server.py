"""The OpenAI-compatible HTTP face of one replica.

Handlers translate between the wire format (`protocol`) and engine requests (through a
`Fanout` per HTTP request); everything about batching stays in the engine core, which runs in a
process of its own (`engine_process`) or, given an `LLMEngine`, on a thread.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from rainier.serve.async_engine import AsyncEngine, EngineClient
from rainier.serve.chat import ChatTemplateError, render_chat
from rainier.serve.engine import LLMEngine, RequestError
from rainier.serve.errors import APIError, install_error_handlers
from rainier.serve.fanout import Choice, Fanout
from rainier.serve.formatting import chat_logprobs, completion_logprobs, sse, usage
from rainier.serve.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    Completion,
    CompletionChoice,
    CompletionRequest,
    ModelCard,
    ModelList,
    SamplingFields,
    Usage,
)
from rainier.serve.sampling import SamplingParams
from rainier.serve.vllm_metrics import render as render_with_vllm_names
from rainier.serve.vllm_metrics import vllm_registry
from rainier.sse import EventStreamResponse

CLIENT_CLOSED_REQUEST = 499


def create_app(
    engine: EngineClient | LLMEngine,
    served_model_name: str,
    on_ready: Callable[[], None] | None = None,
) -> FastAPI:
    async_engine = engine if isinstance(engine, EngineClient) else AsyncEngine(engine)
    tokenizer = async_engine.tokenizer
    defaults = async_engine.generation_defaults

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async_engine.start()
        if on_ready is not None:
            on_ready()
        yield
        await asyncio.to_thread(async_engine.stop)

    app = FastAPI(title="rainier serve", lifespan=lifespan)
    app.state.async_engine = async_engine
    install_error_handlers(app)

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
            async_engine.check_request(prompt_ids, max_tokens)
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

    @app.get("/health")
    async def health() -> Response:
        if not async_engine.alive:
            return JSONResponse({"status": "engine stopped"}, status_code=503)
        return JSONResponse({"status": "ok", **async_engine.load()})

    @app.get("/load")
    async def load() -> dict[str, int]:
        return async_engine.load()

    vllm = vllm_registry(async_engine.metrics, served_model_name)

    @app.get("/metrics")
    async def metrics() -> Response:
        body = render_with_vllm_names(async_engine.metrics, vllm)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    card = ModelCard(id=served_model_name, max_model_len=async_engine.max_model_len)

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[card])

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> ModelCard:
        if name != served_model_name:
            raise APIError(
                404, f"The model `{name}` does not exist.", param="model", code="model_not_found"
            )
        return card

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
        base_id = fanout.base_id
        prompt_tokens = sum(len(p) for p in prompts)

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def event(choices_: list[CompletionChoice], usage_: Usage | None = None) -> str:
                data = Completion(
                    id=base_id, model=served_model_name, choices=choices_, usage=usage_
                ).model_dump()
                if not include_usage:
                    del data["usage"]
                return sse(data)

            created = int(time.time())

            def plain(i: int, text: str, finish: str | None, stop: str | int | None) -> str:
                """The chunk of one choice without logprobs, as `event` would write it, built
                without the models: it is written once per token of every stream."""
                data: dict[str, object] = {
                    "id": base_id,
                    "object": "text_completion",
                    "created": created,
                    "model": served_model_name,
                    "choices": [
                        {
                            "index": i,
                            "text": text,
                            "logprobs": None,
                            "finish_reason": finish,
                            "stop_reason": stop,
                        }
                    ],
                }
                if include_usage:
                    data["usage"] = None
                return sse(data)

            async def stream() -> AsyncIterator[str]:
                """Events that are ready together (a choice's last text and its end; the last
                choice's end, the usage and `[DONE]`) are written together."""
                completion_tokens, cached, last, tail = 0, 0, "", ""
                offsets = [len(echoes[c.prompt_index]) for c in choices]
                try:
                    for c in choices:
                        if echoes[c.prompt_index]:
                            echo = echoes[c.prompt_index]
                            yield event([CompletionChoice(index=c.index, text=echo)])
                    async for i, out in fanout.outputs():
                        lp = None
                        if body.logprobs is not None:
                            lp = completion_logprobs(tokenizer, out.logprobs, offsets[i])
                        offsets[i] += len(out.text)
                        if out.finished:
                            completion_tokens += out.num_output_tokens
                            if i % body.n == 0:
                                cached += out.num_cached_tokens
                        if not (out.text or out.finished or lp):
                            continue
                        if lp is None:
                            text = plain(i, out.text, out.finish_reason, out.stop_reason)
                        else:
                            choice = CompletionChoice(
                                index=i,
                                text=out.text,
                                logprobs=lp,
                                finish_reason=out.finish_reason,
                                stop_reason=out.stop_reason,
                            )
                            text = event([choice])
                        if out.finished and not fanout.unfinished:
                            last = text
                        else:
                            yield text
                    if include_usage:
                        tail = event([], usage(prompt_tokens, completion_tokens, cached))
                except APIError as exc:
                    tail = sse(exc.body())
                finally:
                    fanout.abort()
                yield last + tail + sse("[DONE]")

            return EventStreamResponse(stream())

        done = await fanout.collect(request, choices)
        if done is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        result = Completion(
            id=base_id,
            model=served_model_name,
            choices=[
                CompletionChoice(
                    index=c.index,
                    text=echoes[c.prompt_index] + c.text,
                    logprobs=None
                    if body.logprobs is None
                    else completion_logprobs(tokenizer, c.logprobs, len(echoes[c.prompt_index])),
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
        max_tokens = requested or async_engine.max_model_len - len(prompt_ids)
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
        fanout = Fanout(async_engine, f"chatcmpl-{uuid.uuid4().hex}", body.n)
        choices = [Choice(index=i, prompt_index=0) for i in range(body.n)]
        for c in choices:
            fanout.submit(c.index, prompt_ids, sampling_params(body, max_tokens, logprobs, c.index))
        base_id = fanout.base_id

        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)

            def chunk(choices_: list[ChatChunkChoice], usage_: Usage | None = None) -> str:
                data = ChatCompletionChunk(
                    id=base_id, model=served_model_name, choices=choices_, usage=usage_
                ).model_dump()
                for choice in data["choices"]:
                    choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
                if not include_usage:
                    del data["usage"]
                return sse(data)

            async def stream() -> AsyncIterator[str]:
                """Events that are ready together (a choice's last text and its end; the last
                choice's end, the usage and `[DONE]`) are written together."""
                completion_tokens, cached, last, tail = 0, 0, "", ""
                try:
                    for c in choices:
                        role = ChatDelta(role="assistant", content="")
                        yield chunk([ChatChunkChoice(index=c.index, delta=role)])
                    async for i, out in fanout.outputs():
                        lp = (
                            chat_logprobs(tokenizer, out.logprobs) if logprobs is not None else None
                        )
                        events = ""
                        if out.text or lp:
                            delta = ChatDelta(content=out.text)
                            events = chunk([ChatChunkChoice(index=i, delta=delta, logprobs=lp)])
                        if out.finished:
                            completion_tokens += out.num_output_tokens
                            cached += out.num_cached_tokens if i == 0 else 0
                            end = ChatChunkChoice(
                                index=i, delta=ChatDelta(), finish_reason=out.finish_reason
                            )
                            events += chunk([end])
                        if out.finished and not fanout.unfinished:
                            last = events
                        elif events:
                            yield events
                    if include_usage:
                        tail = chunk([], usage(len(prompt_ids), completion_tokens, cached))
                except APIError as exc:
                    tail = sse(exc.body())
                finally:
                    fanout.abort()
                yield last + tail + sse("[DONE]")

            return EventStreamResponse(stream())

        done = await fanout.collect(request, choices)
        if done is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        result = ChatCompletion(
            id=base_id,
            model=served_model_name,
            choices=[
                ChatChoice(
                    index=c.index,
                    message=AssistantMessage(content=c.text),
                    logprobs=chat_logprobs(tokenizer, c.logprobs) if logprobs is not None else None,
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
