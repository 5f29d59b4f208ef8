"""A service instance behind the gateway proxy, for tests (Python stdlib only).

Answers every request with JSON describing what it received: its own instance id, the
method, the path with the query, the headers (names lower-cased) and the body. `--fail`
makes it answer 500 to everything (a broken deployment); `/slow?ms=N` answers after N ms.

    python3 echo_service.py --port 9001 --id a [--fail]
"""

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--id", required=True)
    ap.add_argument("--fail", action="store_true")
    args = ap.parse_args()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n).decode("utf-8", "replace") if n else ""
            url = urlsplit(self.path)
            if url.path.endswith("/slow"):
                ms = int(parse_qs(url.query).get("ms", ["0"])[0])
                time.sleep(ms / 1000)
            status = 500 if args.fail else 200
            out = json.dumps(
                {
                    "instance": args.id,
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.send_header("X-Served-By", args.id)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(out)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = answer

        def log_message(self, *a):
            pass

    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
