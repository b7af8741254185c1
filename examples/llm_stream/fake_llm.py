"""A stand-in for an LLM provider's streaming API: deterministic tokens, small delays, failures on demand.

The answer depends only on the prompt, so tests can compare what the page shows with `answer(prompt)`.
Failures are triggered by words in the prompt, the way a flaky provider would break mid-answer:

    "fail"   the connection drops mid-answer on every attempt (the page ends with the error)
    "flaky"  the connection drops mid-answer on the first attempt only (QStash's retry finishes it)
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import AsyncIterator

# seconds between tokens; a real model streams 20-80 tokens a second
TOKEN_DELAY_S = float(os.environ.get("FAKE_LLM_TOKEN_DELAY", "0.05"))


class ProviderError(Exception):
    """The provider broke off the answer (a dropped connection, an overloaded model)."""


def answer(prompt: str) -> str:
    topic = " ".join(prompt.split()) or "nothing in particular"
    if len(topic) > 60:
        topic = topic[:57].rstrip() + "…"
    return (f"You asked about “{topic}”. Here is a short answer, streamed one token at a time. "
            "Each token is published to a realtime channel as soon as the model produces it, and the page "
            "follows that channel over Server-Sent Events. If the connection drops, the browser reconnects "
            "with the id of the last message it saw, and lockgate replays everything after it: no gaps, "
            "no repeats. If this webhook fails halfway, QStash delivers the task again and the page starts "
            "over with the new attempt.")


def tokens_of(text: str) -> list[str]:
    """Words with their leading space, as model tokenizers split them (closely enough)."""
    return re.findall(r"\s*\S+", text)


def fails_at(prompt: str, attempt: int) -> int | None:
    """Index of the token at which this attempt breaks off, or None when it completes."""
    words = set(re.findall(r"[a-z]+", prompt.lower()))
    if "fail" in words or ("flaky" in words and attempt == 0):
        return 25
    return None


async def stream(prompt: str, *, attempt: int) -> AsyncIterator[str]:
    """The answer's tokens, one every TOKEN_DELAY_S; raises ProviderError mid-answer when asked to."""
    broken_at = fails_at(prompt, attempt)
    for index, token in enumerate(tokens_of(answer(prompt))):
        await asyncio.sleep(TOKEN_DELAY_S)
        if index == broken_at:
            raise ProviderError(f"the model's connection dropped after {index} tokens")
        yield token
