"""A stand-in for the Hugging Face Hub's HTTP API on loopback: just what huggingface_hub's uploads call.

Routes (read from huggingface_hub's ``hf_api.py`` / ``_commit_api.py``):

- ``GET /api/agent-harnesses``: the registry huggingface_hub reads for its user agent (empty here)
- ``POST /api/repos/create`` (``HfApi.create_repo``): ``{"name", "organization", "visibility", "type"}``
- ``POST /api/validate-yaml`` (``create_commit`` with a README.md): the card must parse with
  ``huggingface_hub.ModelCard`` / ``DatasetCard``, else 400 with the error, as the Hub refuses bad metadata
- ``POST /api/{models,datasets}/{org}/{name}/preupload/{rev}``: every file "regular" (sent inline in the commit)
- ``POST /api/{models,datasets}/{org}/{name}/commit/{rev}``: the NDJSON commit (header + base64 files)

Anything else is answered 404 and recorded, so a test can assert that nothing unexpected was asked. Every
request is kept in ``hub.requests`` (method, path, headers with lower-case names, JSON body); commits are decoded
into ``hub.commits`` (``{"repo", "repo_type", "summary", "files": {path: bytes}}``); repos in ``hub.repos``; the
server's own access log lines in ``hub.log_lines``.

Example::

    with HubStandIn() as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_x"}   # run ptt-push in a subprocess with this env
        ...
        assert hub.commits[0]["files"]["README.md"].startswith(b"---")
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_REPO_ROUTE = re.compile(
    r"^/api/(?P<type>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)/(?P<op>preupload|commit)/(?P<rev>[^/?]+)"
)


class HubStandIn:
    def __init__(self, *, fail_create_repo: tuple[int, str] | None = None) -> None:
        self.requests: list[dict] = []
        self.commits: list[dict] = []
        self.repos: dict[tuple[str, str], dict] = {}
        self.log_lines: list[str] = []
        self.fail_create_repo = fail_create_repo  # (status, body text) answered to every create_repo
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    # -- the endpoints -----------------------------------------------------------------------------------------
    def _create_repo(self, body: dict) -> tuple[int, dict | str]:
        if self.fail_create_repo:
            return self.fail_create_repo
        repo_type = body.get("type") or "model"
        repo_id = f"{body['organization']}/{body['name']}"
        key = (repo_type, repo_id)
        if key in self.repos:
            return 409, {"error": "You already created this repo", "url": self._repo_url(repo_type, repo_id)}
        self.repos[key] = {"visibility": body.get("visibility"), "payload": body}
        return 200, {"url": self._repo_url(repo_type, repo_id)}

    def _validate_yaml(self, body: dict) -> tuple[int, dict]:
        from huggingface_hub import DatasetCard, ModelCard

        card_cls = DatasetCard if body.get("repoType") == "dataset" else ModelCard
        try:
            card_cls(body["content"])
        except Exception as exc:  # noqa: BLE001 - any parse failure is the Hub's 400
            return 400, {"errors": [{"message": f"{type(exc).__name__}: {exc}"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def _preupload(self, body: dict) -> tuple[int, dict]:
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                 for f in body.get("files", [])]  # fmt: skip
        return 200, {"files": files, "commitOid": "0" * 40}

    def _commit(self, repo_type: str, repo_id: str, raw: bytes) -> tuple[int, dict]:
        if (repo_type, repo_id) not in self.repos:
            return 404, {"error": f"Repository {repo_id} not found"}
        header, files = {}, {}
        for line in raw.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                header = item["value"]
            elif item["key"] == "file":
                value = item["value"]
                assert value.get("encoding") == "base64", value.get("encoding")
                files[value["path"]] = base64.b64decode(value["content"])
            else:  # lfsFile / deletedFile / ...: never asked for by a regular-only preupload
                return 400, {"error": f"unexpected commit operation {item['key']}"}
        oid = hashlib.sha1(raw).hexdigest()
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self.commits.append({"repo": repo_id, "repo_type": repo_type, "summary": header.get("summary"),
                             "files": files})  # fmt: skip
        return 200, {"commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid}

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"

    # -- HTTP plumbing -----------------------------------------------------------------------------------------
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # keep the access log for the tests, off stderr
                hub.log_lines.append(fmt % args)

            def _answer(self, status: int, payload) -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                try:
                    body = json.loads(raw) if raw and "ndjson" not in (self.headers.get("Content-Type") or "") else {}
                except ValueError:
                    body = {}
                with hub._lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    hub.requests.append({"method": method, "path": path, "headers": headers, "body": body})
                    m = _REPO_ROUTE.match(path)
                    if method == "GET" and path == "/api/agent-harnesses":  # huggingface_hub's user-agent registry
                        status, payload = 200, {"standardEnvVars": [], "harnesses": {}}
                    elif method == "POST" and path == "/api/repos/create":
                        status, payload = hub._create_repo(body)
                    elif method == "POST" and path == "/api/validate-yaml":
                        status, payload = hub._validate_yaml(body)
                    elif method == "POST" and m and m["op"] == "preupload":
                        status, payload = hub._preupload(body)
                    elif method == "POST" and m and m["op"] == "commit":
                        status, payload = hub._commit(m["type"][:-1], m["repo"], raw)
                    else:
                        status, payload = 404, {"error": f"stand-in: no route {method} {path}"}
                self._answer(status, payload)

            def do_GET(self):  # noqa: N802 - http.server's naming
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def do_PUT(self):  # noqa: N802
                self._serve("PUT")

            def do_HEAD(self):  # noqa: N802
                self._serve("HEAD")

        return Handler
