"""A loopback OpenAI-compatible step judge with fixed verdicts, for the judge tests (and any test needing a judge).

The verdicts follow one rule, so a test can predict them from the store: when the judged CoT concluded a
grade other than the correct grade the prompt shows, its `category_matching` and `relevance_judgement` steps
are incorrect and the rest correct; a CoT that concluded the correct grade has every step correct. Steps
named in `always_wrong` are incorrect whatever the CoT concluded; `latency_s` delays every answer. It answers the JSON schema it is asked
for (the flat verdict object) or, without one, free-text lines `3. incorrect: reason`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from curation.store import StoreBusy, open_store
from schemas.workspace import Workspace

WRONG_WHEN_LABEL_WRONG = ("category_matching", "relevance_judgement")
_GOLD = re.compile(r"The correct grade for this pair is (\S+)")
_CONCLUDED = re.compile(r"\(it concluded (\S+)\)")
_STEP_LINE = re.compile(r"^(\d+)\. ([A-Za-z ]+): ", re.MULTILINE)


@dataclass
class JudgeRules:
    """What the fixed judge says; `requests` counts the chat requests it answered."""

    always_wrong: tuple[str, ...] = ()
    latency_s: float = 0.0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wrong(self, step_name: str, user: str) -> bool:
        gold, concluded = _GOLD.search(user), _CONCLUDED.search(user)
        label_wrong = bool(gold and concluded and gold.group(1) != concluded.group(1))
        return step_name in self.always_wrong or (label_wrong and step_name in WRONG_WHEN_LABEL_WRONG)

    def answer(self, request: dict) -> str:
        user = request["messages"][-1]["content"]
        fmt = request.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            answer = {}
            for key in fmt["json_schema"]["schema"]["properties"]:
                name = key.removesuffix("_reason")
                verdict = "incorrect" if self.wrong(name, user) else "correct"
                answer[key] = f"fixed: {name} is {verdict}" if key.endswith("_reason") else verdict
            return json.dumps(answer)
        lines = []
        for number, title in _STEP_LINE.findall(user.split("The reasoning to grade", 1)[-1]):
            name = title.strip().lower().replace(" ", "_")
            lines.append(f"{number}. {'incorrect' if self.wrong(name, user) else 'correct'}: fixed reason")
        return "\n".join(lines)


def _handler(rules: JudgeRules) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet test output
            pass

        def _send(self, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send({"object": "list", "data": [{"id": "fixed-judge", "object": "model"}]})

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["content-length"])))
            time.sleep(rules.latency_s)
            with rules.lock:
                rules.requests += 1
            n = int(request.get("n") or 1)
            text = rules.answer(request)
            self._send({"id": "judge", "object": "chat.completion", "created": 0, "model": request.get("model"),
                        "choices": [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                                    for i in range(n)],
                        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}})

    return Handler


@contextlib.contextmanager
def judge_server(rules: JudgeRules | None = None) -> Iterator[tuple[str, JudgeRules]]:
    """A fixed-verdict judge on loopback in this process; yields (base URL …/v1, its rules and counter)."""
    rules = rules or JudgeRules()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(rules))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", rules
    finally:
        server.shutdown()
        server.server_close()


def judged_count(ws: Workspace) -> int:
    """Judgements stored so far (-1 while the judge holds the store for longer than the lock wait)."""
    try:
        with open_store(ws, read_only=True) as store:
            return store.scalar("SELECT count(*) FROM judgements")
    except StoreBusy:
        return -1
