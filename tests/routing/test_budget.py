"""max_tokens clamping and the too-long-prompt 400, counted with the real SmolLM2 tokenizer."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.models import is_prepared, model_dir
from gateway.errors import InvalidRequest
from gateway.routing.budget import TokenBudget
from gateway.routing.config import BudgetConfig, ModelBudget
from gateway.routing.tokens import EngineTokenizer, LocalTokenizer
from tests.routing.helpers import chat, routed
from tests.support.engine import EngineEndpoint
from tests.support.stub_engines import MODEL, running_fault_engine

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@pytest.fixture(scope="module")
def smollm2() -> Path:
    folder = model_dir()
    if not is_prepared(folder):
        pytest.skip(f"run `python -m engine prepare` first ({folder} is not prepared)")
    return folder


def words(n: int) -> str:
    return " ".join(f"word{i}" for i in range(n))


async def test_chat_prompt_is_counted_with_the_models_chat_template(smollm2: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    body = chat("What is the capital of France?", system="Be brief.")
    rendered = tokenizer.apply_chat_template(
        body["messages"], add_generation_prompt=True, tokenize=False
    )
    assert isinstance(rendered, str) and rendered.startswith(
        "<|im_start|>system\nBe brief.<|im_end|>"
    )
    expected = len(tokenizer.encode(rendered, add_special_tokens=False))

    local = LocalTokenizer(smollm2)
    count = await local.count(MODEL, body)
    assert count.tokens == expected and 15 < expected < 40
    parts = {
        **body,
        "messages": [
            body["messages"][0],
            {
                "role": "user",
                "content": [{"type": "text", "text": "What is the capital of France?"}],
            },
        ],
    }
    assert (await local.count(MODEL, parts)).tokens == expected
    prompt = await local.count(MODEL, {"prompt": ["short", words(50)]})
    assert prompt.tokens > 50  # the longest prompt of a batch


async def test_max_tokens_clamped_to_budget_and_context(smollm2: Path) -> None:
    config = BudgetConfig(
        max_tokens=100, models={MODEL: ModelBudget(tokenizer=str(smollm2), context_len=256)}
    )
    with running_fault_engine() as engine:
        async with routed([engine.url]) as r:
            budget = TokenBudget(config, r.pool, r.client)
            small = await budget.apply(CHAT, chat("hi", max_tokens=50), MODEL)
            assert small.body["max_tokens"] == 50 and not small.clamped
            assert (
                small.prompt_tokens is not None and small.prompt_tokens < 40
            )  # default system prompt

            capped = await budget.apply(CHAT, chat("hi", max_completion_tokens=5000), MODEL)
            assert capped.body["max_completion_tokens"] == 100 and capped.clamped

            unset = await budget.apply(COMPLETIONS, {"model": MODEL, "prompt": "hi"}, MODEL)
            assert unset.body["max_tokens"] == 100 and not unset.clamped

            long_prompt = chat(words(60), max_tokens=100)  # ~200 tokens of 256
            near = await budget.apply(CHAT, long_prompt, MODEL)
            assert near.prompt_tokens is not None and 156 < near.prompt_tokens < 256
            assert near.body["max_tokens"] == 256 - near.prompt_tokens and near.clamped
            assert near.estimated_tokens == 256
            assert long_prompt["max_tokens"] == 100  # the caller's body is not mutated


async def test_a_prompt_that_cannot_fit_is_a_400_before_any_engine(smollm2: Path) -> None:
    config = BudgetConfig(models={MODEL: ModelBudget(tokenizer=str(smollm2), context_len=256)})
    with running_fault_engine() as engine:
        async with routed([engine.url]) as r:
            budget = TokenBudget(config, r.pool, r.client)
            with pytest.raises(InvalidRequest) as too_long:
                await budget.apply(CHAT, chat(words(200)), MODEL)
            error = too_long.value.body()["error"]
            assert too_long.value.status_code == 400
            assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
            assert "maximum context length is 256 tokens" in error["message"]
            with pytest.raises(InvalidRequest):
                await budget.apply(COMPLETIONS, {"model": MODEL, "prompt": words(200)}, MODEL)
            assert engine.calls == 0


async def test_context_length_comes_from_the_engine_when_not_configured(smollm2: Path) -> None:
    config = BudgetConfig(max_tokens=10_000, default_tokenizer=str(smollm2))
    with running_fault_engine(max_model_len=300) as engine:
        async with routed([engine.url]) as r:
            assert r.pool.context_len(MODEL) == 300  # from /v1/models' max_model_len
            budget = TokenBudget(config, r.pool, r.client)
            got = await budget.apply(CHAT, chat("hi"), MODEL)
            assert got.context_len == 300
            assert got.body["max_completion_tokens"] == 300 - (got.prompt_tokens or 0)


async def test_engine_tokenize_endpoint_is_the_fallback() -> None:
    """No local tokenizer configured: vLLM's POST /tokenize counts (the stub counts words)."""
    with running_fault_engine(max_model_len=50) as engine:
        async with routed([engine.url]) as r:
            budget = TokenBudget(BudgetConfig(max_tokens=1000), r.pool, r.client)
            got = await budget.apply(COMPLETIONS, {"model": MODEL, "prompt": words(30)}, MODEL)
            assert got.prompt_tokens == 30 and got.body["max_tokens"] == 20
            with pytest.raises(InvalidRequest):
                await budget.apply(COMPLETIONS, {"model": MODEL, "prompt": words(50)}, MODEL)
            engine.mode = "ok"
            assert engine.calls == 0  # only /tokenize was asked


async def test_tokenizing_does_not_block_the_event_loop(smollm2: Path) -> None:
    tokenizer = LocalTokenizer(smollm2)
    await tokenizer.load()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    body: dict[str, Any] = {"prompt": words(60_000)}
    started = time.perf_counter()
    count = await tokenizer.count(MODEL, body)
    took = time.perf_counter() - started
    stop.set()
    await ticking
    assert count.tokens > 60_000
    assert len(gaps) >= 3 and max(gaps) < max(0.1, took / 2)  # the loop kept running


async def test_short_prompts_are_counted_on_the_loop_long_ones_in_a_thread(
    smollm2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to inline_chars the count is the same, without the worker thread's hop."""
    threaded = LocalTokenizer(smollm2)
    inline = LocalTokenizer(smollm2, inline_chars=200)
    await inline.load()
    hops: list[Any] = []
    to_thread = asyncio.to_thread

    async def counting_hops(func: Any, *args: Any) -> Any:
        hops.append(func)
        return await to_thread(func, *args)

    short = chat("What is the capital of France?", system="Be brief.")
    long = chat(words(100))
    expected = {id(b): (await threaded.count(MODEL, b)).tokens for b in (short, long)}
    monkeypatch.setattr(asyncio, "to_thread", counting_hops)
    assert (await inline.count(MODEL, short)).tokens == expected[id(short)]
    assert hops == []
    assert (await inline.count(MODEL, long)).tokens == expected[id(long)]
    assert len(hops) == 1
    with_tools = {**short, "tools": [{"type": "function", "function": {"name": words(40)}}]}
    await inline.count(MODEL, with_tools)  # the tools are rendered too: they count
    assert len(hops) == 2


async def test_llama_server_counts_like_the_models_own_tokenizer(
    smollm2: Path, llama_engine: EngineEndpoint
) -> None:
    """llama.cpp's /tokenize takes raw text: the chat is rendered by its template first."""
    async with httpx.AsyncClient() as client:
        engine = EngineTokenizer(client, lambda model: [llama_engine.url])
        local = LocalTokenizer(smollm2)
        body = chat("What is the capital of France?", system="Be brief.")
        counted = await engine.count(llama_engine.model, body)
        assert counted.tokens == (await local.count(MODEL, body)).tokens
        assert counted.context_len is not None and counted.context_len >= 512
        prompt = {"prompt": ["short", words(50)]}
        longest = await engine.count(llama_engine.model, prompt)
        assert longest.tokens > 50
