"""The embedded chat model: llama.cpp (through xllamacpp) running a GGUF file in-process.

One loaded model is shared by every dialogue in the process; calls run in worker threads
(llama.cpp's server loop handles them concurrently, in ``parallel`` slots), so the event
loop is never blocked.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import Field

_servers: dict[tuple[str, int, int, int], Any] = {}
_lock = threading.Lock()
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def _server(path: str, n_ctx: int, threads: int, parallel: int) -> Any:
    key = (path, n_ctx, threads, parallel)
    with _lock:
        server = _servers.get(key)
        if server is None:
            import xllamacpp

            params = xllamacpp.CommonParams()
            params.model.path = path
            params.n_ctx = n_ctx * parallel  # llama.cpp splits the context between slots
            params.n_parallel = parallel
            params.cpuparams.n_threads = threads
            params.cpuparams_batch.n_threads = threads
            params.verbosity = -1
            server = _servers[key] = xllamacpp.Server(params)
        return server


class LocalChatModel(BaseChatModel):
    """A GGUF model run by llama.cpp in this process; no key, no network."""

    model_path: str
    threads: int = Field(max(1, min(4, os.cpu_count() or 1)), ge=1)
    n_ctx: int = Field(4096, ge=1)
    parallel: int = Field(2, ge=1)
    default_max_tokens: int = Field(512, ge=1)
    # sampling that keeps a small model readable (measured in bench/bench_local_text.py):
    # a mild repetition penalty over a short window, and DRY, which penalises repeating
    # any sequence already in the context (its own answer, or the earlier turns in its
    # prompt) without penalising common words. A strong penalty over a long window
    # (1.3 over 256 tokens, dlg's earlier default) penalised "the" and full stops too,
    # and gave run-on text with broken words. The bounds are llama.cpp's.
    repeat_penalty: float = Field(1.1, gt=0)
    repeat_last_n: int = Field(64, ge=0)
    dry_multiplier: float = Field(0.8, ge=0)
    dry_base: float = Field(1.75, ge=1)
    dry_allowed_length: int = Field(2, ge=0)
    # tokens DRY looks back over; None: the whole context
    dry_penalty_last_n: int | None = Field(None, ge=0)
    dlg_label: str = "local"
    dlg_json_schema: bool = True  # structured answers: held to the schema by a grammar

    @property
    def _llm_type(self) -> str:
        return "dlg-local-llama.cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "n_ctx": self.n_ctx}

    def _payload(self, messages: list[BaseMessage], stop: list[str] | None,
                 kwargs: dict[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "messages": [{"role": _ROLES.get(m.type, "user"), "content": str(m.content)}
                         for m in messages],
            "max_tokens": kwargs.get("max_tokens") or self.default_max_tokens,
            "repeat_penalty": kwargs.get("repeat_penalty", self.repeat_penalty),
            "repeat_last_n": kwargs.get("repeat_last_n", self.repeat_last_n),
            "dry_multiplier": kwargs.get("dry_multiplier", self.dry_multiplier),
            "dry_base": kwargs.get("dry_base", self.dry_base),
            "dry_allowed_length": kwargs.get("dry_allowed_length", self.dry_allowed_length),
            "dry_penalty_last_n": kwargs.get("dry_penalty_last_n",
                                             self.dry_penalty_last_n or self.n_ctx),
        }
        for key in ("temperature", "top_p", "seed"):
            if kwargs.get(key) is not None:
                payload[key] = kwargs[key]
        if stop:
            payload["stop"] = stop
        if kwargs.get("json_schema"):  # llama.cpp turns it into a grammar
            payload["json_schema"] = kwargs["json_schema"]
        return payload

    def load(self) -> None:
        """Load the model file (once per process and settings); calls do it if needed."""
        _server(self.model_path, self.n_ctx, self.threads, self.parallel)

    def _call_server(self, payload: dict[str, Any], on_chunk: Any,
                     stop: threading.Event | None = None) -> None:
        """One streamed call: ``on_chunk(data)`` for each chunk llama.cpp sends. Once
        ``stop`` is set, the next token ends the generation (its slot is freed): a call
        that is cancelled stops in a token's time, not after its whole answer."""
        server = _server(self.model_path, self.n_ctx, self.threads, self.parallel)

        def each(data: Any) -> bool:  # True: stop generating
            if stop is not None and stop.is_set():
                return True
            on_chunk(data)
            return False

        payload = {**payload, "stream": True, "stream_options": {"include_usage": True}}
        server.handle_chat_completions(payload, each)

    def _answer(self, payload: dict[str, Any], stop: threading.Event | None = None
                ) -> ChatResult:
        """The whole answer, gathered from a streamed call (a plain call cannot be
        stopped)."""
        pieces: list[str] = []
        usage: dict[str, Any] = {}
        finish: Any = None
        errors: list[Exception] = []

        def gather(data: Any) -> None:
            nonlocal finish
            try:
                if "error" in data:
                    raise_error(data)
                choices = data.get("choices") or []
                if choices:
                    pieces.append((choices[0].get("delta") or {}).get("content") or "")
                    finish = choices[0].get("finish_reason") or finish
                usage.update(data.get("usage") or {})
            except Exception as exc:  # llama.cpp's thread would only stop: kept to raise
                errors.append(exc)
                raise

        self._call_server(payload, gather, stop)
        if errors:
            raise errors[0]
        message = AIMessage(
            content="".join(pieces),
            usage_metadata={
                "input_tokens": usage.get("prompt_tokens", 0),
                "output_tokens": usage.get("completion_tokens", 0),
                "total_tokens": usage.get("total_tokens", 0),
            },
            response_metadata={"model_name": self.dlg_label, "finish_reason": finish},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        return self._answer(self._payload(messages, stop, kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        payload = self._payload(messages, stop, kwargs)
        stopping = threading.Event()
        try:  # cancelled (Ctrl-C, a timeout): return at once, and llama.cpp stops too
            return await anyio.to_thread.run_sync(lambda: self._answer(payload, stopping),
                                                  abandon_on_cancel=True)
        finally:
            stopping.set()

    @staticmethod
    def _chunk(data: dict[str, Any]) -> ChatGenerationChunk | None:
        if "error" in data:
            raise_error(data)
        choices = data.get("choices") or []
        text = (choices[0].get("delta") or {}).get("content") if choices else None
        usage = data.get("usage")
        if not text and not usage:
            return None
        meta: Any = None
        if usage:
            meta = {"input_tokens": usage.get("prompt_tokens", 0),
                    "output_tokens": usage.get("completion_tokens", 0),
                    "total_tokens": usage.get("total_tokens", 0)}
        return ChatGenerationChunk(message=AIMessageChunk(content=text or "",
                                                          usage_metadata=meta))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        chunks: list[dict[str, Any]] = []
        self._call_server(self._payload(messages, stop, kwargs), chunks.append)
        for data in chunks:
            chunk = self._chunk(data)
            if chunk is not None:
                yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any
                       ) -> AsyncIterator[ChatGenerationChunk]:
        send, receive = anyio.create_memory_object_stream[Any](1000)
        token = anyio.lowlevel.current_token()
        payload = self._payload(messages, stop, kwargs)
        stopping = threading.Event()

        def on_chunk(data: Any) -> None:
            anyio.from_thread.run_sync(send.send_nowait, data, token=token)

        async def produce() -> None:
            async with send:
                await anyio.to_thread.run_sync(
                    lambda: self._call_server(payload, on_chunk, stopping),
                    abandon_on_cancel=True)

        try:
            async with anyio.create_task_group() as tg, receive:
                tg.start_soon(produce)
                async for data in receive:
                    chunk = self._chunk(data)
                    if chunk is not None:
                        yield chunk
        finally:  # cancelled, or the reader stopped reading: llama.cpp stops too
            stopping.set()


def raise_error(data: dict[str, Any]) -> None:
    error = data["error"]
    message = error.get("message", error) if isinstance(error, dict) else error
    raise RuntimeError(f"llama.cpp: {message}")


# the spec options (``local?threads=2``): the fields this class adds to LangChain's, but
# the two dlg sets itself
OPTIONS = tuple(name for name in LocalChatModel.model_fields
                if name not in BaseChatModel.model_fields
                and name not in ("model_path", "dlg_label", "dlg_json_schema"))
