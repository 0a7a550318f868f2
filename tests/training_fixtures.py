"""Fixtures for the training tests: a learnable compression rule (drop function words), pairs built
from the shipped corpus by that rule, and an OpenAI-protocol chat-completions server on loopback that
answers with the rule's compression, with scripted 429/500 failures to exercise retries."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lingua2_batch.model.scratch import shipped_corpus_texts
from lingua2_batch.training.labeling import word_spans

FUNCTION_WORDS = frozenset(
    "the a an of to and in on for is are was were that this with by at as".split()
)
TEXT_MARKER = "please compress the following text: \n"
TEXT_END = "\nThe compressed text is: "


def drop_function_words(text: str) -> tuple[str, list[int]]:
    """The rule's compression (kept words joined by single spaces) and the label of every word."""
    spans = word_spans(text)
    words = [text[s:e] for s, e in spans]
    labels = [0 if w.casefold() in FUNCTION_WORDS else 1 for w in words]
    pieces, previous_end, previous_kept = [], None, False
    for (start, end), keep in zip(spans, labels):
        if keep:
            if previous_end is not None and pieces:
                gap = text[previous_end:start]
                # adjacent kept words keep their own gap; across dropped words one space stands in
                pieces.append(gap if previous_kept else (" " if any(c.isspace() for c in gap) else ""))
            pieces.append(text[start:end])
        previous_end, previous_kept = end, bool(keep)
    return "".join(pieces), labels


def english_corpus_texts() -> list[str]:
    """Shipped documents that are mostly ASCII (the rule is about English function words)."""
    texts = []
    for text in shipped_corpus_texts():
        ascii_share = sum(c.isascii() for c in text) / max(1, len(text))
        if ascii_share > 0.97:
            texts.append(text)
    return texts


def corpus_sentences(min_words: int = 4) -> list[str]:
    sentences = []
    for text in english_corpus_texts():
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", text):
            sentence = sentence.strip()
            if len(sentence.split()) >= min_words:
                sentences.append(sentence)
    return sentences


def chunk_from_request(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if TEXT_MARKER in content:
        content = content.split(TEXT_MARKER, 1)[1]
        if content.endswith(TEXT_END):
            content = content[: -len(TEXT_END)]
    return content


class FakeTeacher:
    """``ThreadingHTTPServer`` on 127.0.0.1 speaking POST /v1/chat/completions.
    ``failures`` is a list of HTTP statuses returned (in order, one per request) before normal answers."""

    def __init__(self, failures: list[int] | None = None, retry_after: str | None = "0"):
        self.failures = list(failures or [])
        self.retry_after = retry_after
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with teacher.lock:
                    teacher.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    status = teacher.failures.pop(0) if teacher.failures else 200
                    teacher.statuses.append(status)
                if self.path != "/v1/chat/completions":
                    status = 404
                if status != 200:
                    payload = json.dumps({"error": {"message": f"scripted {status}"}}).encode()
                    self.send_response(status)
                    if status == 429 and teacher.retry_after is not None:
                        self.send_header("Retry-After", teacher.retry_after)
                else:
                    compressed, _ = drop_function_words(chunk_from_request(body))
                    payload = json.dumps(
                        {
                            "id": "chatcmpl-test",
                            "object": "chat.completion",
                            "model": body.get("model"),
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": compressed}, "finish_reason": "stop"}],
                        }
                    ).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeTeacher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
