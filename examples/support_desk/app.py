"""The support desk: triage -> research -> draft -> quality review, with escalation.

Screening and research are deterministic code (a function agent and a knowledge-base tool);
triage, drafting and review are LLM agents with typed contracts. Low confidence, policy topics,
prompt-injection attempts and rejected drafts escalate: as a structured outcome (`support`), or
to a person through the human inbox (`support_inbox`): the run waits, durably, until someone
writes the reply (`corral inbox`, `corral answer`, or the dashboard's Inbox page).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from corral import Agent, App, AppConfig, RejectedError, RunContext, function_agent, tool
from corral.errors import AgentError

HERE = Path(__file__).parent
KB = json.loads((HERE / "kb.json").read_text(encoding="utf-8"))
Category = Literal["billing", "technical", "account", "shipping", "other"]

_INJECTION = re.compile(
    r"ignore (all )?(previous|prior) instructions|system prompt|developer mode|^\s*system:",
    re.IGNORECASE | re.MULTILINE,
)
_POLICY = re.compile(
    r"\b(sue|lawyer|legal|gdpr|delete all my|someone else logged)\b", re.IGNORECASE
)
MAX_CHARS = 1500


class Ticket(BaseModel):
    """A customer message as it arrives."""

    id: str
    text: str


class Screened(BaseModel):
    """A ticket after deterministic screening."""

    id: str
    text: str
    truncated: bool
    flag: Literal["ok", "empty", "injection", "policy"]


class Triage(BaseModel):
    """What kind of ticket this is and how sure the model is."""

    category: Category
    urgency: int = Field(ge=1, le=5)
    confidence: float = Field(ge=0, le=1)


class DraftRequest(BaseModel):
    ticket: str
    category: Category
    articles: list[str]


class Draft(BaseModel):
    reply: str = Field(min_length=1, max_length=300)


class ReviewRequest(BaseModel):
    ticket: str
    reply: str


class Review(BaseModel):
    approved: bool
    score: int = Field(ge=1, le=5)


class Resolution(BaseModel):
    """The outcome of one ticket."""

    ticket_id: str
    outcome: Literal["replied", "escalated", "human_reply"]
    category: Category | None = None
    reply: str | None = None
    reason: str | None = None
    articles: list[str] = []


@function_agent
def screen(ticket: Ticket) -> Screened:
    """Normalize whitespace, cut very long tickets, flag empty, injection and policy cases."""
    text = " ".join(ticket.text.split())
    flag: Literal["ok", "empty", "injection", "policy"] = "ok"
    if not text:
        flag = "empty"
    elif _INJECTION.search(ticket.text):
        flag = "injection"
    elif _POLICY.search(text):
        flag = "policy"
    return Screened(id=ticket.id, text=text[:MAX_CHARS], truncated=len(text) > MAX_CHARS, flag=flag)


@tool
def search_kb(query: str, category: str, limit: int = 2) -> list[dict[str, str]]:
    """Search the knowledge base; returns the best matching articles."""
    words = {w for w in re.findall(r"\w+", query.lower()) if len(w) > 3}

    def score(article: dict[str, str]) -> tuple[int, int]:
        text = f"{article['title']} {article['body']}".lower()
        return (sum(w in text for w in words), article["category"] == category)

    ranked = sorted(KB, key=score, reverse=True)
    return [{"id": a["id"], "body": a["body"]} for a in ranked[:limit]]


triage = Agent(
    name="triage",
    instructions=(
        "You triage customer support tickets. Pick the category (billing, technical, account, "
        "shipping or other), the urgency from 1 (low) to 5 (critical) and your confidence from 0 "
        "to 1 that the category is right."
    ),
    input=Screened,
    output=Triage,
    model="small",
    max_output_tokens=60,
)
drafter = Agent(
    name="drafter",
    instructions=(
        "You write short, polite replies to customer tickets. Use only the facts in the articles. "
        "Never promise refunds or actions that the articles do not allow."
    ),
    input=DraftRequest,
    output=Draft,
    model="small",
    max_output_tokens=160,
)
reviewer = Agent(
    name="reviewer",
    instructions=(
        "You review a support reply before it is sent. Approve it only if it answers the ticket, "
        "is polite, and makes no promise. Score it from 1 (bad) to 5 (excellent)."
    ),
    input=ReviewRequest,
    output=Review,
    model="small",
    max_output_tokens=40,
)

CONFIDENCE_FLOOR = 0.3


async def handle_ticket(ctx: RunContext, ticket: Ticket) -> Resolution:
    """Screen, triage, research, draft and review one ticket; escalations are an outcome."""
    return await _handle(ctx, ticket, inbox=False)


async def handle_ticket_inbox(ctx: RunContext, ticket: Ticket) -> Resolution:
    """The same, but an escalation waits for a person to write the reply."""
    return await _handle(ctx, ticket, inbox=True)


async def _handle(ctx: RunContext, ticket: Ticket, *, inbox: bool) -> Resolution:
    screened = await ctx.call(screen, ticket)

    async def escalate(
        reason: str, category: Category | None = None, draft: Draft | None = None
    ) -> Resolution:
        if not inbox:
            return Resolution(
                ticket_id=ticket.id, outcome="escalated", category=category, reason=reason
            )
        request = DraftRequest(
            ticket=screened.text or "(empty)", category=category or "other", articles=[]
        )
        try:
            written = await ctx.escalate(drafter, request, reason=reason, proposed=draft)
        except RejectedError as exc:
            return Resolution(
                ticket_id=ticket.id,
                outcome="escalated",
                category=category,
                reason=f"{reason}; {exc.message}",
            )
        return Resolution(
            ticket_id=ticket.id,
            outcome="human_reply",
            category=category,
            reply=written.reply,
            reason=reason,
        )

    if screened.flag != "ok":
        return await escalate(f"screening: {screened.flag}")
    try:
        tri = await ctx.call(triage, screened)
    except AgentError as exc:
        return await escalate(f"triage failed: {exc.code}")
    if tri.confidence < CONFIDENCE_FLOOR:
        return await escalate(f"low triage confidence {tri.confidence:.2f}", tri.category)
    articles = await ctx.tool(search_kb, query=screened.text, category=tri.category)
    assert isinstance(articles, list)
    try:
        draft = await ctx.call(
            drafter,
            DraftRequest(
                ticket=screened.text, category=tri.category, articles=[a["body"] for a in articles]
            ),
        )
        review = await ctx.call(reviewer, ReviewRequest(ticket=screened.text, reply=draft.reply))
    except AgentError as exc:
        return await escalate(f"{exc.agent} failed: {exc.code}", tri.category)
    if not review.approved:
        return await escalate(
            f"review rejected the draft (score {review.score})", tri.category, draft
        )
    return Resolution(
        ticket_id=ticket.id,
        outcome="replied",
        category=tri.category,
        reply=draft.reply,
        articles=[a["id"] for a in articles],
    )


def build_app(config: AppConfig | None = None) -> App:
    """The support desk app; `config` picks the database and the model behind each tier."""
    app = App(config)
    app.workflow(handle_ticket, name="support")
    app.workflow(handle_ticket_inbox, name="support_inbox")
    return app


def load_tickets(path: Path | None = None) -> list[Ticket]:
    """The shipped tickets (or a JSONL file of `{"id", "text"}` objects)."""
    lines = (path or HERE / "tickets.jsonl").read_text(encoding="utf-8").splitlines()
    return [Ticket.model_validate_json(line) for line in lines if line.strip()]
