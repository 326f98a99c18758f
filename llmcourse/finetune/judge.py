"""A larger model as the judge of responses, over HTTP (chapter 5).

``judge_responses`` asks a chat server (Ollama's ``POST /api/chat`` by default) to
score each response from 0 to 100 against the reference answer. Nothing calls it
unless asked: it needs a server running beside the course.
"""
from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from .instruct import check_instruction_record, format_prompt


def judge_prompt(entry: Mapping, response_key: str = "model_response") -> str:
    """The request that asks a larger model to grade one response from 0 to 100."""
    check_instruction_record(entry, need_output=True)
    return (
        f"Given the input `{format_prompt(entry)}` and correct output `{entry['output']}`, "
        f"score the model response `{entry[response_key]}` on a scale from 0 to 100, "
        f"where 100 is the best score. Respond with the integer number only."
    )


def ollama_chat(url: str, payload: dict, timeout: float = 120.0) -> str:
    """Send one chat request to an Ollama-style server (``POST /api/chat``, no
    streaming) and return the reply's text."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())["message"]["content"]


def judge_responses(records: Sequence[Mapping], url: str = "http://localhost:11434/api/chat",
                    model: str = "llama3", request_fn: Callable[[str, dict], str] = ollama_chat,
                    response_key: str = "model_response") -> list[int | None]:
    """Scores from 0 to 100 given by a larger model acting as the judge.

    Needs a local chat server (Ollama by default); nothing calls it unless asked.
    ``request_fn(url, payload)`` sends one request and returns the reply text. A reply
    without an integer scores None.
    """
    scores = []
    for entry in records:
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": judge_prompt(entry, response_key)}],
            "stream": False,
            "options": {"seed": 123, "temperature": 0},  # the same grade on every run
        }
        match = re.search(r"\d+", request_fn(url, payload))
        scores.append(int(match.group()) if match else None)
    return scores
