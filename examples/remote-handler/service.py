#!/usr/bin/env python3
"""A remote handler for astra-bus in Python, standard library only.

It decides the events of the group `scoring.trade_scorer` (handler = "remote"): for each
trade it adds the trade's volume to the user's total (state ops astra-bus commits
atomically with the ack) and publishes one `astra.scoring.trade_scored.v1` event. It
registers itself in the service registry through the edge and heartbeats until it stops.

    python3 service.py --port 9101 --id scorer-1 --edge http://127.0.0.1:8080

The wire contract (version 1) is in the README ("Remote handlers"). The essentials:
astra-bus POSTs {"contract": 1, "group", "events": [...]} to --path; each event carries
its envelope and an `idempotency_key` (its event id, the same on every redelivery); the
answer is {"results": [{"id", "outcome": "done" | "retry" | "poison", "reason", "emit",
"ops"}]}. Only what the daemon commits takes effect, exactly once: this service keeps no
state of its own, so it need not be idempotent itself. A service with side effects of its
own (an email, a payment) would record `idempotency_key` and skip a repeat.
"""

import argparse
import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = "astra.scoring.trade_scored.v1"
LIMIT_CENTS = 100_000_000


def decide(event):
    """One event in, one result out."""
    d = event.get("data") or {}
    user, qty, price = d.get("user_id"), d.get("quantity"), d.get("price_usd")
    if not isinstance(user, str) or not isinstance(qty, (int, float)) or not isinstance(price, (int, float)):
        return {"id": event["id"], "outcome": "poison", "reason": "a trade needs user_id, quantity and price_usd"}
    volume_cents = int(round(qty * price * 100))
    if volume_cents > LIMIT_CENTS:
        # A rule of this service: such a trade goes to the dead letters with this reason.
        return {"id": event["id"], "outcome": "poison", "reason": "over the scorer's limit of 1,000,000 USD per trade"}
    return {
        "id": event["id"],
        "outcome": "done",
        "ops": [
            ["HINCRBY", "svc:scorer:volume_cents", user, volume_cents],
            ["HINCRBY", "svc:scorer:trades", user, 1],
        ],
        "emit": [
            {
                "stream": OUT,
                "data": {"trade_id": d.get("trade_id"), "user_id": user, "volume_cents": volume_cents},
            }
        ],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--id", required=True, help="this instance's id in the registry")
    ap.add_argument("--service", default="scorer")
    ap.add_argument("--path", default="/events")
    ap.add_argument("--edge", help="the astra-bus edge to register with, e.g. http://127.0.0.1:8080")
    ap.add_argument("--ttl-ms", type=int, default=3000)
    ap.add_argument("--key", help="an API key with scope register:<service> (edge.ops = \"keys\")")
    args = ap.parse_args()
    seen = set()
    stats = {"requests": 0, "events": 0, "repeats": 0, "last_traceparent": None}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, status, obj):
            out = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self):
            if self.path == "/stats":
                with lock:
                    self.reply(200, dict(stats, instance=args.id))
            else:
                self.reply(404, {"error": "not_found"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path != args.path:
                return self.reply(404, {"error": "not_found"})
            if self.headers.get("X-Astra-Contract") != "1":
                return self.reply(400, {"error": "this service speaks contract 1"})
            try:
                batch = json.loads(body)
                events = batch["events"]
            except (ValueError, KeyError, TypeError):
                return self.reply(400, {"error": "not a batch"})
            with lock:
                stats["requests"] += 1
                stats["events"] += len(events)
                for e in events:
                    stats["last_traceparent"] = e.get("traceparent")
                    k = e["idempotency_key"]
                    if k in seen:
                        stats["repeats"] += 1
                    seen.add(k)
            self.reply(200, {"results": [decide(e) for e in events]})

        def log_message(self, *a):
            pass

    def heartbeat():
        url = f"{args.edge}/v1/services/{args.service}/instances/{args.id}"
        body = json.dumps({"url": f"http://127.0.0.1:{args.port}", "ttl_ms": args.ttl_ms}).encode()
        headers = {"Content-Type": "application/json"}
        if args.key:
            headers["Authorization"] = f"Bearer {args.key}"
        while True:
            try:
                urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=2).read()
            except OSError:
                pass  # the edge restarts or is away: the next beat tries again
            time.sleep(args.ttl_ms / 3000)

    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.edge:
        threading.Thread(target=heartbeat, daemon=True).start()
    print(f"{args.service}/{args.id} listening on {args.port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
