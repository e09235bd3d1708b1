"""A webhook receiver for trying Parley's webhooks on one machine: it prints one line per delivery
and checks its Standard Webhooks signature. Python's standard library only.

    python3 examples/webhook_receiver.py --port 9000 --secret whsec_...

Parley refuses to send to 127.0.0.1 unless told it may: start it with
PARLEY_WEBHOOK_ALLOWED_CIDRS=127.0.0.1/32.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
from http.server import BaseHTTPRequestHandler, HTTPServer


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """`webhook-signature` is space-separated `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
    keyed with the base64 part of the whsec_ secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id', '')}.{headers.get('webhook-timestamp', '')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.partition(",")[2] for s in headers.get("webhook-signature", "").split() if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, signature) for signature in given)


def handler_for(secret: str | None) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            event = json.loads(body)
            checked = "not checked" if secret is None else ("ok" if signature_ok(secret, headers, body) else "BAD")
            print(f"{event['type']}  webhook-id {headers.get('webhook-id')}  signature {checked}  "
                  f"{json.dumps(event['data'])[:120]}", flush=True)
            self.send_response(204 if checked != "BAD" else 401)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    return Receiver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", help="the endpoint's whsec_ secret, to check signatures")
    args = parser.parse_args()
    server = HTTPServer(("127.0.0.1", args.port), handler_for(args.secret))
    print(f"receiving webhooks on http://127.0.0.1:{args.port}/ (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
