"""Loopback OpenAI-compatible servers for the generation tests and bench/generate.py.

`FakeServer` is a tiny asyncio HTTP/1.1 server (no framework, so it costs the client little CPU) that
answers chat completions after a fixed latency, honours `n` or not, and injects faults in order:
`429` (with Retry-After), `500`, `400`, `hang` (never answers), `truncated` (a 200 whose JSON is cut) and
`huge` (a 200 with a 6 MB body). `reasoning` answers like a reasoning parser does: the CoT in
`reasoning_content`, only the label line in `content`, reasoning tokens in the usage.
Run it as a script to get a separate process: `python tests/helpers_generation.py --port 0 ...`
prints `PORT <n>` once it listens. `TransformersServer` runs the real `transformers serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ANSWER = (
    "1. Query understanding: the shopper wants {query}.\n"
    "2. Item understanding: the item is what the title says.\n"
    "3. Category matching: the categories agree.\n"
    "4. Attribute matching: the stated attributes agree.\n"
    "5. Relevance judgement: this is {label}.\n"
    "Label: {label}"
)
GRADES = ("L4", "L3", "L2", "L1")


def _die_with_parent() -> None:
    """Run in the child before exec: the server gets SIGTERM when the test process dies, even by SIGKILL."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG (Linux)


def parse_faults(spec: str) -> list[str]:
    """'429x2,500,hang' -> ['429', '429', '500', 'hang']."""
    faults: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, times = part.partition("x")
        faults.extend([kind] * int(times or 1))
    return faults


class _Http(asyncio.Protocol):
    def __init__(self, server: FakeServer):
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            length = 0
            keys = ""
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                lname = name.strip().lower()
                if lname == "content-length":
                    length = int(value)
                elif lname == "x-cotgen-request-keys":
                    keys = value.strip()
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            body = self.buffer[head_end + 4:end]
            self.buffer = self.buffer[end:]
            self.server.handle(self, head.split(" ", 2)[:2], body, keys)

    def send(self, status: str, body: bytes, extra: str = "") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(
            f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode()
            + body
        )


class FakeServer:
    """Chat completions after `latency_s`; faults consumed one per chat request, in order."""

    def __init__(self, latency_s: float = 0.0, faults: list[str] | None = None, honour_n: bool = True,
                 log_path: Path | None = None, retry_after: str = "1", usage_tokens: int = 40, reasoning: bool = False):
        self.latency_s = latency_s
        self.faults = list(faults or [])
        self.honour_n = honour_n
        self.log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115 - lives as long as the server
        self.retry_after = retry_after
        self.usage_tokens = usage_tokens
        self.reasoning = reasoning
        self.loop = asyncio.get_running_loop()

    def handle(self, conn: _Http, request_line: list[str], body: bytes, keys: str) -> None:
        method, path = request_line
        if method == "GET":
            payload = {"status": "ok"} if path.startswith("/health") else {"object": "list", "data": [{"id": "fake", "object": "model"}]}
            conn.send("200 OK", json.dumps(payload).encode())
            return
        fault = self.faults.pop(0) if self.faults else "ok"
        if self.log:
            self.log.write(json.dumps({"keys": keys, "fault": fault, "t": time.time()}) + "\n")
        if fault == "hang":
            return
        self.loop.call_later(self.latency_s, self._respond, conn, body, fault)

    def _respond(self, conn: _Http, body: bytes, fault: str) -> None:
        if fault == "429":
            conn.send("429 Too Many Requests", b'{"error": {"message": "slow down", "type": "rate_limit"}}',
                      f"retry-after: {self.retry_after}\r\n")
        elif fault == "500":
            conn.send("500 Internal Server Error", b'{"error": {"message": "boom", "type": "server_error"}}')
        elif fault == "400":
            conn.send("400 Bad Request", b'{"error": {"message": "messages: bad request", "type": "invalid_request"}}')
        elif fault == "huge":
            conn.send("200 OK", json.dumps({"choices": [], "padding": "x" * (6 << 20)}).encode())
        else:
            payload = self._completion(json.loads(body))
            conn.send("200 OK", payload[: len(payload) // 2] if fault == "truncated" else payload)

    def _completion(self, req: dict) -> bytes:
        n = int(req.get("n") or 1) if self.honour_n else 1
        seed = int(req.get("seed") or 0)
        user = req["messages"][-1]["content"]
        query = user.splitlines()[0][:60]
        choices = [self._choice(req, i, query, GRADES[(seed + i) % 4]) for i in range(n)]
        usage = {"prompt_tokens": len(user) // 4, "completion_tokens": self.usage_tokens * n,
                 "total_tokens": len(user) // 4 + self.usage_tokens * n}
        if self.reasoning:
            for choice in choices:
                cot, _, label_line = choice["message"]["content"].rpartition("\n")
                choice["message"] = {"role": "assistant", "content": label_line, "reasoning_content": cot}
            usage["completion_tokens_details"] = {"reasoning_tokens": (self.usage_tokens - 5) * n}
        return json.dumps({"id": "cmpl-fake", "object": "chat.completion", "created": 0, "model": req.get("model"),
                           "choices": choices, "usage": usage}).encode()

    @staticmethod
    def _choice(req: dict, index: int, query: str, label: str) -> dict:
        """A well-formed answer: JSON when a schema is asked for; label first, with top logprobs, when those are."""
        cot = ANSWER.format(query=query, label=label)
        choice: dict = {"index": index, "finish_reason": "stop"}
        fmt = req.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            steps = dict(line.split(". ", 1)[1].split(": ", 1) for line in cot.splitlines()[:5])
            answer = {key: label if key == "label" else steps[key.replace("_", " ").capitalize()]
                      for key in fmt["json_schema"]["schema"]["properties"]}
            choice["message"] = {"role": "assistant", "content": json.dumps(answer)}
        elif req.get("logprobs"):
            rest = cot.rsplit("\n", 1)[0]
            others = [g for g in GRADES if g != label]
            top = [(label[1], -0.36), (others[0][1], -1.6), (others[1][1], -2.3)]
            tokens = [("Label", []), (":", []), (" L", [(" L", -0.01)]), (label[1], top), ("\n" + rest, [])]
            choice["message"] = {"role": "assistant", "content": "".join(t for t, _ in tokens)}
            choice["logprobs"] = {"content": [{"token": t, "logprob": (alts or [(t, 0.0)])[0][1],
                                               "top_logprobs": [{"token": a, "logprob": lp} for a, lp in alts]}
                                              for t, alts in tokens]}
        else:
            choice["message"] = {"role": "assistant", "content": cot}
        return choice


async def serve(port: int, server_kwargs: dict) -> None:
    loop = asyncio.get_running_loop()
    fake = FakeServer(**server_kwargs)
    srv = await loop.create_server(lambda: _Http(fake), "127.0.0.1", port, backlog=1024)
    print(f"PORT {srv.sockets[0].getsockname()[1]}", flush=True)
    async with srv:
        await srv.serve_forever()


@contextlib.contextmanager
def fake_server(latency_s: float = 0.0, faults: str = "", honour_n: bool = True, log_path: Path | None = None,
                retry_after: str = "1", reasoning: bool = False) -> Iterator[str]:
    """A FakeServer in its own process; yields its base URL (…/v1)."""
    args = [sys.executable, __file__, "--port", "0", "--latency", str(latency_s), "--faults", faults,
            "--retry-after", retry_after]
    if not honour_n:
        args.append("--ignore-n")
    if reasoning:
        args.append("--reasoning")
    if log_path:
        args += ["--log", str(log_path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def received_keys(log: Path) -> list[str]:
    """Every sample key a FakeServer with `log_path` received, repeats included."""
    if not log.exists():
        return []
    return [k for line in log.read_text().splitlines() for k in json.loads(line)["keys"].split(",") if k]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers 200, the process dies, or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


@contextlib.contextmanager
def transformers_server(model_path: str, log_path: Path, timeout_s: float = 180, threads: int | None = None) -> Iterator[str]:
    """`transformers serve MODEL --device cpu` on a free loopback port; yields its base URL (…/v1)."""
    port = free_port()
    exe = Path(sys.executable).with_name("transformers")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(exe), "serve", model_path, "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
             "--dtype", "float32"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 **({"OMP_NUM_THREADS": str(threads)} if threads else {})},
        )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout_s, proc)  # offline, its /v1/models answers 500
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def configure(workspace: Path, section: str, **values: object) -> None:
    """Set keys of one [section] in a workspace's cotgen.toml (replacing what is there)."""
    path = workspace / "cotgen.toml"
    lines = path.read_text().splitlines()
    header = f"[{section}]"
    if header not in lines:
        lines += ["", header]
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    kept = [ln for ln in lines[start:end] if ln.split("=", 1)[0].strip() not in values]
    new = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines[:start] + new + kept + lines[end:]) + "\n")


CROWDFLOWER_MAP = "id=id,query=query,title=product_title,description=product_description,label=median_relevance"


def crowdflower_workspace(base: Path, shared_data: Path) -> Path:
    """A workspace with CrowdFlower ingested (scheme crowdflower) and the rule index built; made once under `base`."""
    from conftest import run_cli

    ws = base / "crowdflower-template"
    if (ws / ".ready").exists():
        return ws
    run_cli("init", str(ws))
    configure(ws, "index", k=2)
    run_cli("ingest", str(shared_data / "crowdflower" / "train_dev.csv"), "-w", str(ws), "--source", "crowdflower",
            "--scheme", "crowdflower", "--map", CROWDFLOWER_MAP, "--strip-html")
    run_cli("index", "build", "-w", str(ws))
    (ws / ".ready").touch()
    return ws


def fresh_workspace(template: Path, target: Path) -> Path:
    """A copy of the CrowdFlower template whose teacher and policy are the fake server's (free-text answers)."""
    import shutil

    shutil.copytree(template, target)
    # Free-text answers: the example template's teacher is structured (for the bundled model), these tests are not.
    for role in ("teacher", "policy"):
        configure(target, role, backend="openai", model="fake", timeout_s=2.0, retry_base_s=0.05, concurrency=4,
                  structured=False)
    return target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--faults", default="")
    ap.add_argument("--ignore-n", action="store_true")
    ap.add_argument("--log", type=Path)
    ap.add_argument("--retry-after", default="1")
    ap.add_argument("--reasoning", action="store_true")
    a = ap.parse_args()
    kwargs = {"latency_s": a.latency, "faults": parse_faults(a.faults), "honour_n": not a.ignore_n,
              "log_path": a.log, "retry_after": a.retry_after, "reasoning": a.reasoning}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(a.port, kwargs))


if __name__ == "__main__":
    main()
