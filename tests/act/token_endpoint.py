#!/usr/bin/env python3
"""Stand-in for the GitHub runner's OIDC token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL), which only
exists inside GitHub's runner service. It speaks the runner's wire format: a GET of
/_apis/distributedtask/idtoken?api-version=2.0&audience=AUD with `Authorization: Bearer <request
token>`, answered with {"count": N, "value": "<JWT>"}. The local S3 server's STS accepts any
well-formed token, so a JWT-shaped string is enough.

    ACT_REQUEST_TOKEN=... token_endpoint.py STATE_DIR

Listens on 127.0.0.1 (a free port), writes its URL to STATE_DIR/url once it listens, the number
of tokens it handed out to STATE_DIR/issued and the tokens themselves to STATE_DIR/tokens (so a
check can make sure none is printed); refuses (400) a wrong bearer token, method, path or
audience, counting those in STATE_DIR/refused.
"""
import base64
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

PATH = "/_apis/distributedtask/idtoken"
AUDIENCE = "sts.amazonaws.com"


def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    issued = 0
    refused = 0

    def do_GET(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        ok = (
            self.headers.get("Authorization") == f"Bearer {self.server.request_token}"
            and url.path == PATH
            and query.get("api-version") == ["2.0"]
            and query.get("audience") == [AUDIENCE]
        )
        if not ok:
            Handler.refused += 1
            self.server.write("refused", Handler.refused)
            self.answer(400, {"message": "bad request: wrong bearer token, path or audience"})
            return
        Handler.issued += 1
        claims = {"iss": "https://token.actions.githubusercontent.com", "aud": AUDIENCE,
                  "sub": "repo:vantagecompute/slurm-factory:ref:refs/heads/main", "n": Handler.issued}
        token = f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.{b64('local-stand-in')}"
        with open(os.path.join(self.server.state, "tokens"), "a") as f:
            f.write(token + "\n")
        self.server.write("issued", Handler.issued)
        self.answer(200, {"count": 1, "value": token})

    def do_POST(self):
        Handler.refused += 1
        self.server.write("refused", Handler.refused)
        self.answer(405, {"message": "only GET"})

    def answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):  # the request line and status; headers (the token) never
        sys.stderr.write("token endpoint: " + (fmt % args) + "\n")


class Server(HTTPServer):
    def write(self, name, value):
        tmp = os.path.join(self.state, f".{name}")
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
        os.replace(tmp, os.path.join(self.state, name))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: ACT_REQUEST_TOKEN=... token_endpoint.py STATE_DIR")
    token = os.environ.get("ACT_REQUEST_TOKEN", "")
    if not token:
        sys.exit("error: ACT_REQUEST_TOKEN (the bearer token requests must carry) is empty")
    server = Server(("127.0.0.1", 0), Handler)
    server.request_token = token
    server.state = sys.argv[1]
    server.write("issued", 0)
    server.write("refused", 0)
    server.write("url", f"http://127.0.0.1:{server.server_address[1]}{PATH}?api-version=2.0")
    server.serve_forever()


if __name__ == "__main__":
    main()
