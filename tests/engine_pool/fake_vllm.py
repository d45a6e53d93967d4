"""A fake vLLM OpenAI server, used ONLY to inject faults into the pool tests (crash, hang,
failed starts, failed warm-up). Stdlib only; started through ``fake_python`` (conftest),
which stands in for the interpreter and routes ``-m vllm.entrypoints.openai.api_server``
here, so the pool and EngineProcess run exactly as they do for the real engine.

Extra flags (after the vLLM ones, via EngineSpec.extra_args):
  --fake-state DIR         append "start PID TIME" to DIR/starts.log on every start
  --fake-fail-starts N     the first N starts (counted in starts.log) exit(1) at once
  --fake-startup-delay S   sleep before listening
  --fake-spawn-child       keep a child process in the group (like vLLM's EngineCore)
  --fake-warmup-status C   answer completions with this HTTP status
Control: POST /fake/die (exit 3), POST /fake/sick (/health answers 503), GET /fake/info.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fake-state", type=Path, default=None)
    parser.add_argument("--fake-fail-starts", type=int, default=0)
    parser.add_argument("--fake-startup-delay", type=float, default=0.0)
    parser.add_argument("--fake-spawn-child", action="store_true")
    parser.add_argument("--fake-warmup-status", type=int, default=200)
    args, _ = parser.parse_known_args()
    return args


class State:
    sick = False
    completions = 0
    child_pid: int | None = None


def make_handler(args: argparse.Namespace, state: State) -> type[BaseHTTPRequestHandler]:
    name = args.served_model_name or args.model

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *items: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any] | None = None) -> None:
            data = json.dumps(body or {}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(503 if state.sick else 200)
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            elif self.path == "/fake/info":
                self._send(
                    200,
                    {
                        "pid": os.getpid(),
                        "child_pid": state.child_pid,
                        "completions": state.completions,
                    },
                )
            else:
                self._send(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/v1/completions":
                state.completions += 1
                if args.fake_warmup_status != 200:
                    self._send(args.fake_warmup_status, {"error": {"message": "injected"}})
                    return
                self._send(
                    200,
                    {
                        "id": "cmpl-fake",
                        "object": "text_completion",
                        "model": body.get("model"),
                        "choices": [{"index": 0, "text": " hi", "finish_reason": "length"}],
                    },
                )
            elif self.path == "/fake/die":
                self._send(200)
                threading.Timer(0.05, lambda: os._exit(3)).start()
            elif self.path == "/fake/sick":
                state.sick = True
                self._send(200)
            else:
                self._send(404)

    return Handler


def main() -> int:
    args = parse()
    starts = 0
    if args.fake_state is not None:
        args.fake_state.mkdir(parents=True, exist_ok=True)
        log = args.fake_state / "starts.log"
        starts = len(log.read_text().splitlines()) if log.exists() else 0
        with log.open("a") as handle:
            handle.write(f"start {os.getpid()} {time.time():.3f}\n")
    if starts < args.fake_fail_starts:
        print(f"fake vllm: injected start failure {starts + 1}", flush=True)
        return 1
    state = State()
    if args.fake_spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        state.child_pid = child.pid
    time.sleep(args.fake_startup_delay)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(args, state))
    print(f"fake vllm: serving {args.served_model_name or args.model} on {args.port}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
