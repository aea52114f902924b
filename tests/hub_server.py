"""A small local stand-in for the Hugging Face Hub HTTP API, for tests (not collected: no `test_` prefix).

It speaks enough of the Hub protocol for the real `huggingface_hub` 2.4 client (and therefore diffusers' and
bar_hf's loading and pushing code) to download and upload model repos over HTTP on 127.0.0.1:

Downloads (`snapshot_download`, `hf_hub_download`, `model_info`, `list_repo_tree`):
    - `GET /api/models/{repo}` and `GET /api/models/{repo}/revision/{rev}`: model info with `sha` and `siblings`;
    - `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...`: one page, files and folders;
    - `HEAD|GET /{repo}/resolve/{rev}/{path}`: the file with `ETag`, `X-Repo-Commit`, `Content-Length` (and for
      files the Hub stores in LFS, `*.safetensors` etc.: `X-Linked-Etag` = sha256 and `X-Linked-Size`). No redirect
      and no Xet headers, so the client uses plain HTTP GETs.
Uploads (`create_repo`, `upload_folder`, `create_commit`, diffusers' `push_to_hub`):
    - `POST /api/repos/create` (409 if it exists; a new repo gets an initial commit with `.gitattributes`; a bare
      name is created in the namespace of the token owner, `HubStandIn.user`); `GET /api/whoami-v2`;
    - `POST /api/validate-yaml` (README front matter parsed with PyYAML);
    - `POST /api/models/{repo}/preupload/{rev}`: answers `uploadMode: "regular"` for every file, whatever its size,
      so the client sends every file inline (base64) in the commit and never uses LFS or Xet (checked with both
      `upload_folder` paths of hub 2.4: the pipelined one used when `hf_xet` is installed, and `create_commit` with
      `HF_HUB_DISABLE_XET=1`); `oid` of an unchanged file lets the client skip it, as on the Hub;
    - `POST /api/models/{repo}/commit/{rev}`: NDJSON (`header`, `file`, `deletedFile`, `deletedFolder`); `lfsFile`
      lines are refused with 400 since the stand-in never asks for LFS.

Errors carry the `X-Error-Code` headers (`RepoNotFound`, `RevisionNotFound`, `EntryNotFound`) the client maps to its
exceptions. Write calls need an `Authorization: Bearer ...` header (any value), like the Hub. Every request is
recorded in `HubStandIn.requests` as `(method, path)`.

Not supported: pull requests (`create_pr`), branches other than `main` for writes, tags, datasets/spaces, Xet/LFS
uploads, pagination (trees are listed in one page).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["HubStandIn", "git_blob_sha1"]

# Files the Hub keeps in LFS (a subset of its default .gitattributes).
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".npz", ".zip")
GITATTRIBUTES = b"".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n".encode() for s in LFS_SUFFIXES)

_REPO = r"(?P<repo>[\w.\-]+/[\w.\-]+)"
_ROUTES = [
    ("GET", re.compile(rf"^/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?$"), "model_info"),
    ("GET", re.compile(rf"^/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("HEAD", re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("POST", re.compile(r"^/api/repos/create$"), "create_repo"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
]


def git_blob_sha1(data: bytes) -> str:
    """Git object id of a blob (what the Hub reports as `oid`/ETag of a non-LFS file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


def _lfs_pointer(data: bytes) -> bytes:
    sha = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()


@dataclass
class _Repo:
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> full snapshot {path: bytes}
    history: list[str] = field(default_factory=list)  # commit shas on main, oldest first

    @property
    def head(self) -> str:
        return self.history[-1]


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


class HubStandIn:
    """Thread-backed HTTP server standing in for the Hub API. Use `start()`/`stop()` or as a context manager.

    Example:
        ```py
        with HubStandIn() as hub:
            hub.add_folder("user/tiny", saved_pipeline_dir)
            snapshot_download("user/tiny", endpoint=hub.url)
        ```
    """

    def __init__(self, user: str = "user") -> None:
        self.user = user  # owner of any token: namespace of repos created without one
        self.repos: dict[str, _Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubStandIn:
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="hub-stand-in", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> HubStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------ repo content
    def create(self, repo_id: str, private: bool = False) -> _Repo:
        """Create an empty repo (initial commit with `.gitattributes`, as the Hub does)."""
        with self._lock:
            repo = _Repo(private=private)
            self._commit(repo, {".gitattributes": GITATTRIBUTES}, "initial commit")
            self.repos[repo_id] = repo
            return repo

    def add_folder(self, repo_id: str, folder: str | Path, message: str = "add folder") -> str:
        """Commit every file of a local folder to `repo_id` (created if missing); returns the commit sha."""
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}
        repo = self.repos.get(repo_id) or self.create(repo_id)
        with self._lock:
            return self._commit(repo, {**repo.commits[repo.head], **files}, message)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Snapshot `{path: bytes}` of a repo at `revision` (branch `main` or a commit sha)."""
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.head if revision == "main" else revision])

    @staticmethod
    def _commit(repo: _Repo, snapshot: dict[str, bytes], message: str) -> str:
        parent = repo.history[-1] if repo.history else ""
        digest = hashlib.sha1(parent.encode() + message.encode())
        for path in sorted(snapshot):
            digest.update(path.encode() + b"\0" + git_blob_sha1(snapshot[path]).encode())
        sha = digest.hexdigest()
        repo.commits[sha] = snapshot
        repo.history.append(sha)
        return sha

    # ------------------------------------------------------------------------------------------ helpers
    def _repo(self, repo_id: str, authorized: bool) -> _Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise _HTTPError(404, f"Repository Not Found for url: {repo_id}.", "RepoNotFound")
        return repo

    @staticmethod
    def _resolve(repo: _Repo, revision: str) -> str:
        revision = unquote(revision)
        if revision == "main":
            return repo.head
        if revision in repo.commits:
            return revision
        raise _HTTPError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    @staticmethod
    def _entry(path: str, data: bytes) -> dict:
        entry = {"type": "file", "path": path, "size": len(data)}
        if _is_lfs(path):
            pointer = _lfs_pointer(data)
            entry["oid"] = git_blob_sha1(pointer)
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)}
        else:
            entry["oid"] = git_blob_sha1(data)
        return entry

    # ------------------------------------------------------------------------------------------ endpoints
    def model_info(self, handler, repo: str, rev: str | None = None) -> tuple[int, dict, bytes]:
        r = self._repo(repo, handler.authorized)
        sha = self._resolve(r, rev or "main")
        siblings = []
        for path, data in sorted(r.commits[sha].items()):
            sibling = {"rfilename": path, "size": len(data), "blobId": self._entry(path, data)["oid"]}
            if _is_lfs(path):
                lfs = self._entry(path, data)["lfs"]
                sibling["lfs"] = {"size": lfs["size"], "sha256": lfs["oid"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        body = {
            "_id": hashlib.md5(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": sha,
            "private": r.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "library_name": "diffusers",
            "siblings": siblings,
        }
        return _json(200, body)

    def tree(self, handler, repo: str, rev: str, path: str | None = None) -> tuple[int, dict, bytes]:
        r = self._repo(repo, handler.authorized)
        sha = self._resolve(r, rev)
        prefix = (unquote(path).strip("/") + "/") if path else ""
        recursive = handler.query.get("recursive", ["false"])[0].lower() == "true"
        files, folders = [], set()
        for file_path, data in sorted(r.commits[sha].items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):
                if recursive or depth == 1:
                    folders.add(prefix + "/".join(rest[:depth]))
            if recursive or len(rest) == 1:
                files.append(self._entry(file_path, data))
        if prefix and not files and not folders:
            raise _HTTPError(404, f"{prefix} does not exist on {rev}", "EntryNotFound", {"X-Repo-Commit": sha})
        entries = [{"type": "directory", "path": f, "oid": hashlib.sha1(f.encode()).hexdigest()} for f in folders]
        return _json(200, sorted(entries, key=lambda e: e["path"]) + files)

    def resolve(self, handler, repo: str, rev: str, path: str) -> tuple[int, dict, bytes]:
        r = self._repo(repo, handler.authorized)
        sha = self._resolve(r, rev)
        path = unquote(path)
        data = r.commits[sha].get(path)
        if data is None:
            raise _HTTPError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        if _is_lfs(path):
            etag = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{etag}"', "X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{git_blob_sha1(data)}"'
        range_header = handler.headers.get("Range")
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if match:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return 206, headers, data[start : end + 1]
        return 200, headers, data

    def create_repo(self, handler) -> tuple[int, dict, bytes]:
        handler.require_auth()
        payload = handler.json_body()
        if payload.get("type", "model") != "model":
            raise _HTTPError(400, f"repo type {payload.get('type')!r} is not supported by the stand-in")
        # like the Hub, a bare name goes to the token owner's namespace
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        url = f"{self.url}/{repo_id}"
        if repo_id in self.repos:
            return _json(409, {"error": "You already created this model repo", "url": url})
        self.create(repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        return _json(200, {"url": url, "name": repo_id, "id": repo_id})

    def whoami(self, handler) -> tuple[int, dict, bytes]:
        handler.require_auth()
        return _json(200, {"type": "user", "name": self.user, "fullname": self.user, "orgs": []})

    def validate_yaml(self, handler) -> tuple[int, dict, bytes]:
        content = handler.json_body().get("content", "")
        match = re.match(r"^---\n(.*?)\n---", content, flags=re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            return _json(400, {"errors": [{"message": f"invalid YAML: {err}"}], "warnings": []})
        if metadata is not None and not isinstance(metadata, dict):
            return _json(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
        return _json(200, {"errors": [], "warnings": []})

    def preupload(self, handler, repo: str, rev: str) -> tuple[int, dict, bytes]:
        handler.require_auth()
        r = self._repo(repo, True)
        if "create_pr" in handler.query:
            raise _HTTPError(400, "pull requests are not supported by the stand-in")
        snapshot = r.commits[self._resolve(r, rev)]
        files = []
        for item in handler.json_body()["files"]:
            existing = snapshot.get(item["path"])
            files.append(
                {
                    "path": item["path"],
                    "uploadMode": "regular",  # always inline: no LFS/Xet upload to emulate
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(existing) if existing is not None else None,
                }
            )
        return _json(200, {"files": files, "commitOid": r.head})

    def commit(self, handler, repo: str, rev: str) -> tuple[int, dict, bytes]:
        handler.require_auth()
        r = self._repo(repo, True)
        if unquote(rev) != "main" or "create_pr" in handler.query:
            raise _HTTPError(400, "the stand-in only commits to `main` (no branches, no pull requests)")
        lines = [json.loads(line) for line in handler.body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HTTPError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self._lock:
            parent = header.get("parentCommit")
            if parent is not None and parent != r.head:
                raise _HTTPError(412, f"parentCommit {parent} is not the head of main ({r.head})")
            snapshot = dict(r.commits[r.head])
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise _HTTPError(400, f"unsupported encoding {value.get('encoding')!r}")
                    snapshot[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if snapshot.pop(value["path"], None) is None:
                        raise _HTTPError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    snapshot = {p: d for p, d in snapshot.items() if not p.startswith(prefix)}
                elif key == "lfsFile":
                    raise _HTTPError(400, "lfsFile is not supported: the stand-in asks for regular uploads only")
                else:
                    raise _HTTPError(400, f"unknown commit operation {key!r}")
            sha = self._commit(r, snapshot, header.get("summary", ""))
        return _json(200, {"success": True, "commitOid": sha, "commitUrl": f"{self.url}/{repo}/commit/{sha}"})


def _json(status: int, body) -> tuple[int, dict, bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args) -> None:  # noqa: A002 - silence the default stderr access log
        pass

    # -------------------------------------------------------------------------------- request helpers
    @property
    def authorized(self) -> bool:
        return (self.headers.get("Authorization") or "").lower().startswith("bearer ")

    def require_auth(self) -> None:
        if not self.authorized:
            raise _HTTPError(401, "Invalid username or password.")

    def body(self) -> bytes:
        if not hasattr(self, "_body"):
            self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def json_body(self) -> dict:
        return json.loads(self.body() or b"{}")

    # -------------------------------------------------------------------------------- dispatch
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.hub.requests.append((method, split.path))
        try:
            for route_method, pattern, name in _ROUTES:
                match = pattern.match(split.path) if route_method == method else None
                if match:
                    kwargs = {k: v for k, v in match.groupdict().items() if v is not None}
                    status, headers, payload = getattr(self.hub, name)(self, **kwargs)
                    break
            else:
                raise _HTTPError(404, f"no stand-in route for {method} {split.path}")
        except _HTTPError as err:
            status, headers, payload = _json(err.status, {"error": err.message})
            headers.update(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message
        if method != "HEAD" and method != "GET":
            self.body()  # drain the request body so the connection stays consistent
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)
        self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
