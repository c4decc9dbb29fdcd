"""A fake Hugging Face Hub on 127.0.0.1, answering as the hub does for what
``hf_hub_download`` asks (huggingface_hub's ``file_download.py``).

``FakeHub(files)`` serves ``{"OWNER/REPO": {"FILE": content}}`` (bytes, or a Path read in
pieces). ``HEAD`` or ``GET /OWNER/REPO/resolve/REVISION/FILE`` answers as the hub does
for an LFS file: a 302 to its storage (a second server, another origin, like the hub's
CDN) with ``X-Repo-Commit``, ``ETag`` (the git blob hash), ``X-Linked-Etag`` (the sha256)
and ``X-Linked-Size``; an unknown repository, revision or file is a 404 with the hub's
``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). The
storage answers ``GET /blobs/SHA256``, and ``Range: bytes=N-`` with a 206.

Faults, per file (``hub.faults[(repo, file)]``): ``"cut"`` sends half of the first
download and hangs up (the next request, with a Range, gets the rest); ``"corrupt"``
serves other bytes of the same length than the hub's checksum says; ``"echo"`` refuses
with a 403 whose message repeats the ``Authorization`` header it was sent.
``hub.requests`` records (server, method, path, headers) of each request.
"""

from __future__ import annotations

import hashlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from .servers import _Loopback

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _read(content: bytes | Path) -> bytes:
    return content.read_bytes() if isinstance(content, Path) else content


class _Storage(_Loopback):
    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        super().__init__()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self.hub

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                hub.record("storage", self)
                blob = hub.blobs.get(self.path.removeprefix("/blobs/"))
                if blob is None:
                    self.send_error(404)
                    return
                data, fault = blob
                start = 0
                ranged = self.headers.get("Range", "")
                if ranged.startswith("bytes=") and ranged.endswith("-"):
                    start = int(ranged[6:-1])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                end = len(data)
                if fault == "cut" and not start and not hub.cut_done:
                    hub.cut_done = True
                    end = len(data) // 2  # then the connection closes, short
                step = 1 << 20
                for at in range(start, end, step):
                    self.wfile.write(data[at:min(at + step, end)])
                self.wfile.flush()

        return Handler


class FakeHub(_Loopback):
    def __init__(self, files: dict[str, dict[str, bytes | Path]]) -> None:
        self.files = files
        self.faults: dict[tuple[str, str], str] = {}
        self.blobs: dict[str, tuple[bytes, str]] = {}
        self.cut_done = False
        super().__init__()
        self.storage = _Storage(self)

    def record(self, server: str, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append({"server": server, "method": handler.command,
                                  "path": handler.path,
                                  "headers": {k.lower(): v for k, v in handler.headers.items()}})

    def __enter__(self) -> FakeHub:
        self.storage.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self.storage.__exit__(*exc)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _refuse(self, status: int, code: str | None, message: str,
                        commit: bool = False) -> None:
                self.send_response(status)
                if code:
                    self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
                if commit:
                    self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self) -> None:
                hub.record("hub", self)
                owner, _, rest = self.path.lstrip("/").partition("/")
                name, _, rest = rest.partition("/")
                repo = f"{owner}/{name}"
                kind, _, rest = rest.partition("/")
                revision, _, file = rest.partition("/")
                if kind != "resolve" or repo not in hub.files:
                    self._refuse(404, "RepoNotFound", "Repository not found")
                    return
                if revision not in ("main", COMMIT):
                    self._refuse(404, "RevisionNotFound", "Invalid rev id: " + revision)
                    return
                if file not in hub.files[repo]:
                    self._refuse(404, "EntryNotFound", f"{file} does not exist",
                                 commit=True)
                    return
                fault = hub.faults.get((repo, file), "")
                if fault == "echo":
                    self._refuse(403, None, "Forbidden: you sent "
                                 + self.headers.get("authorization", "nothing"))
                    return
                data = _read(hub.files[repo][file])
                sha256 = hashlib.sha256(data).hexdigest()
                git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                served = data
                if fault == "corrupt":
                    served = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
                hub.blobs[sha256] = (served, fault)
                self.send_response(302)
                self.send_header("Location", f"{hub.storage.base_url}/blobs/{sha256}")
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{git}"')
                self.send_header("X-Linked-Etag", f'"{sha256}"')
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD

        return Handler
