"""Security of the HTTP server (issue #12, defect 7): authentication fails closed, and two agents stay apart.

* Configuration: no token configuration can turn authentication off; only ``--no-auth`` can, on loopback.
* Ordering: the token is checked before the body is read; the body limit holds for authenticated requests,
  chunked or not.
* A two-principal state machine over real HTTP (a server subprocess with tokens for alice and bob): an agent
  never sees the other's memories except through an active grant, and never changes them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from embeddix_mcp import ConfigError, ServerSettings, build_http_app
from embeddix_mcp.cli import main

ALICE = secrets.token_urlsafe(24)
BOB = secrets.token_urlsafe(24)
TOKENS = {"alice": ALICE, "bob": BOB}
TOKENS_BY_TOKEN = {ALICE: "alice", BOB: "bob"}
LIMIT = 65_536
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
PROTOCOL = "2025-06-18"
INIT = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes and subprocess servers")


# -- configuration: no auth-off state short of --no-auth on loopback --------------------------------------
@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a server that would start fail the test instead of serving forever (as the old code did)."""
    import uvicorn

    def refuse(self: Any) -> None:
        raise AssertionError("the server started; it should have refused its configuration")

    monkeypatch.setattr(uvicorn.Server, "run", refuse)
    for var in [v for v in os.environ if v.startswith("EMBEDDIX_")]:
        monkeypatch.delenv(var)


BAD_TOKEN_FILES = {
    "empty": "",
    "blank": "   \n\t\n",
    "empty-object": "{}",
    "empty-object-spaced": "  {  }\n",
    "empty-list": "[]",
    "short-token": "abc123",
    "short-json-token": json.dumps({"short": "alice"}),
    "whitespace-json-token": json.dumps({" " * 24: "alice"}),
    "token-with-space": json.dumps({"a" * 12 + " " + "b" * 12: "alice"}),
    "non-string-agent": json.dumps({"t" * 24: 5}),
    "non-string-value-list": json.dumps({"t" * 24: ["alice"]}),
    "null-agent": json.dumps({"t" * 24: None}),
    "json-list-of-tokens": json.dumps(["t" * 24]),
    "two-lines": "t" * 24 + "\n" + "u" * 24 + "\n",
}


@pytest.mark.parametrize("content", list(BAD_TOKEN_FILES.values()), ids=list(BAD_TOKEN_FILES))
def test_a_token_file_without_a_valid_token_refuses_to_start(
    content: str, tmp_path: Path, no_serving: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    path.chmod(0o600)
    args = ["--transport", "streamable-http", "--data", str(tmp_path / "d"), "--embedder", "hash"]
    with pytest.raises(ConfigError):
        build_http_app(ServerSettings(data=str(tmp_path / "d"), embedder="hash", token_file=path))
    assert main([*args, "--token-file", str(path)]) == 2
    err = capsys.readouterr().err
    assert "embeddix-mcp: error:" in err and "token" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("token", ["", " ", " " * 24, "\t" * 20, "short"])
def test_an_explicitly_empty_or_blank_env_token_refuses_to_start(
    token: str, tmp_path: Path, no_serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDDIX_TOKEN", token)
    assert main(["--transport", "streamable-http", "--data", str(tmp_path), "--embedder", "hash"]) == 2


def test_http_without_any_token_needs_an_explicit_no_auth(
    tmp_path: Path, no_serving: None, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--transport", "streamable-http", "--data", str(tmp_path), "--embedder", "hash"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--token-file" in err and "--no-auth" in err
    for host in ("0.0.0.0", "192.168.1.10", "example.com", "::"):
        assert main([*args, "--host", host, "--no-auth"]) == 2
        assert "loopback" in capsys.readouterr().err
    token = tmp_path / "token"
    token.write_text("t" * 32)
    token.chmod(0o600)
    assert main([*args, "--no-auth", "--token-file", str(token)]) == 2  # contradictory: refused
    for host in ("127.0.0.1", "::1", "localhost"):
        assert build_http_app(ServerSettings(data=str(tmp_path), embedder="hash", host=host, no_auth=True))


def test_no_auth_from_the_environment_is_also_loopback_only(
    tmp_path: Path, no_serving: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMBEDDIX_NO_AUTH", "1")
    assert ServerSettings().no_auth is True
    monkeypatch.setenv("EMBEDDIX_HOST", "0.0.0.0")
    assert main(["--transport", "streamable-http", "--data", str(tmp_path), "--embedder", "hash"]) == 2


@posix_only
def test_a_token_file_readable_by_others_gets_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(TOKENS_BY_TOKEN))
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="embeddix_mcp"):
        build_http_app(ServerSettings(data=str(tmp_path / "d"), embedder="hash", token_file=path))
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(path) in m and f"chmod 600 {path}" in m for m in warned), warned
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="embeddix_mcp"):
        build_http_app(ServerSettings(data=str(tmp_path / "d"), embedder="hash", token_file=path))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- ordering: authentication before the body -----------------------------------------------------------
async def _asgi(app: Any, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, int]:
    """Send one POST /mcp to ``app``; returns (status, how many body chunks the app asked for)."""
    asked = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        if asked <= len(chunks):
            return {"type": "http.request", "body": chunks[asked - 1], "more_body": asked < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/mcp",
        "raw_path": b"/mcp",
        "query_string": b"",
        "root_path": "",
        "server": ("127.0.0.1", 8765),
        "client": ("127.0.0.1", 50000),
        "headers": [
            (k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1:8765", **headers}.items()
        ],
    }
    await app(scope, receive, send)
    return status, asked


async def test_the_token_is_checked_before_the_body_is_read(tmp_path: Path) -> None:
    app = build_http_app(
        ServerSettings(data=str(tmp_path), embedder="hash", token=ALICE, agent="alice", max_body_bytes=4096)
    )
    big = [b"x" * 3000] * 4  # 12 000 bytes in chunks, no Content-Length: a chunked upload
    declared = {**MCP_HEADERS, "content-length": "12000"}
    for headers in (MCP_HEADERS, declared, {**declared, "authorization": "Bearer wrong-token-wrong-token"}):
        status, asked = await _asgi(app, headers, big)
        assert (status, asked) == (401, 0)
    auth = {**MCP_HEADERS, "authorization": f"Bearer {ALICE}"}
    assert (await _asgi(app, auth, big))[0] == 413  # chunked: counted as it streams
    assert (await _asgi(app, {**auth, "content-length": "12000"}, big))[0] == 413


# -- two principals over real HTTP ---------------------------------------------------------------------
class McpSession:
    """A minimal synchronous MCP client over streamable HTTP (JSON-RPC over POST, SSE or JSON answers)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.http = httpx.Client(timeout=30)
        self.headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
        self.next_id = 1
        r = self.http.post(url, json=INIT, headers=self.headers)
        assert r.status_code == 200, r.text
        self.headers["mcp-session-id"] = r.headers["mcp-session-id"]
        self.headers["mcp-protocol-version"] = PROTOCOL
        r = self.http.post(
            url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=self.headers
        )
        assert r.status_code == 202, r.text

    def request(self, method: str, params: dict[str, Any], **header_overrides: str | None) -> dict[str, Any]:
        """Send one request; returns the JSON-RPC response (``result`` or ``error``)."""
        rid = self.next_id
        self.next_id += 1
        headers = {k: v for k, v in {**self.headers, **header_overrides}.items() if v is not None}
        r = self.http.post(
            self.url, json={"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, headers=headers
        )
        if r.status_code != 200:
            return {"http_status": r.status_code}
        if r.headers["content-type"].startswith("application/json"):
            return dict(r.json())
        for line in r.text.splitlines():
            if line.startswith("data: "):
                doc = json.loads(line[6:])
                if doc.get("id") == rid:
                    return dict(doc)
        raise AssertionError(f"no response to request {rid}: {r.text[:500]}")

    def tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        """Call a tool; returns the CallToolResult as a dict."""
        res = self.request("tools/call", {"name": name, "arguments": arguments})
        assert "result" in res, res
        return dict(res["result"])

    def close(self) -> None:
        self.http.delete(self.url, headers=self.headers)
        self.http.close()


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory, spawn_http: Callable[..., Any]) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("security")
    tokens = root / "tokens.json"
    tokens.write_text(json.dumps(TOKENS_BY_TOKEN))
    tokens.chmod(0o600)
    srv = spawn_http(
        [
            *("--data", str(root / "data"), "--embedder", "hash"),
            *("--token-file", str(tokens), "--max-body-bytes", str(LIMIT)),
        ],
        root / "server.log",
    )
    yield srv
    srv.stop()
    assert "chmod 600" not in (root / "server.log").read_text()


AGENTS = ("alice", "bob")
NAMESPACES = (None, "shared")
# Every memory id ever stored by the state machine, by (owner, namespace): the server outlives examples.
LEDGER: dict[tuple[str, str | None], set[str]] = {(a, n): set() for a in AGENTS for n in NAMESPACES}


def _owner_of(mid: str) -> tuple[str, str | None] | None:
    return next((key for key, ids in LEDGER.items() if mid in ids), None)


class TwoPrincipals(RuleBasedStateMachine):
    """alice and bob on one server: every read is checked against the ledger of who stored what."""

    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.sessions = {a: McpSession(self.url, TOKENS[a]) for a in AGENTS}
        self.grants: set[tuple[str, str, str | None]] = set()
        # Ids stored in this example, in order: what rules draw from (LEDGER spans examples, and drawing
        # from it would make hypothesis's data depend on earlier examples).
        self.mine: dict[tuple[str, str | None], list[str]] = {key: [] for key in LEDGER}
        self.counter = 0
        for owner, grantee in (("alice", "bob"), ("bob", "alice")):
            for ns in NAMESPACES:  # grants persist on disk across examples: start from none
                self.sessions[owner].tool("revoke", to_agent=grantee, **_ns(ns))

    def teardown(self) -> None:
        for s in self.sessions.values():
            s.close()

    def _may_read(self, caller: str, owner: str, ns: str | None) -> bool:
        return caller == owner or (owner, caller, ns) in self.grants

    def _check_visible(self, caller: str, owner: str, ns: str | None, memories: list[dict[str, Any]]) -> None:
        assert self._may_read(caller, owner, ns)
        for m in memories:
            # The isolation invariant: whatever is shown belongs to the owner asked for, in that namespace.
            assert _owner_of(m["id"]) == (owner, ns), (caller, owner, ns, m["id"])
            assert m["agent"] == owner and m["namespace"] == ns

    @initialize()
    def seed(self) -> None:
        for agent in AGENTS:
            self.remember(agent, None)

    @rule(agent=st.sampled_from(AGENTS), ns=st.sampled_from(NAMESPACES))
    def remember(self, agent: str, ns: str | None) -> None:
        self.counter += 1
        text = f"{agent} private note {self.counter} {secrets.token_hex(4)}"
        res = self.sessions[agent].tool("remember", text=text, **_ns(ns))
        assert not res["isError"], res
        LEDGER[(agent, ns)].update(res["structuredContent"]["ids"])
        self.mine[(agent, ns)].extend(res["structuredContent"]["ids"])

    @rule(caller=st.sampled_from(AGENTS), owner=st.sampled_from(AGENTS), ns=st.sampled_from(NAMESPACES))
    def recall(self, caller: str, owner: str, ns: str | None) -> None:
        args = {"query": f"{owner} private note", "k": 20, **_ns(ns)}
        if caller != owner:
            args["from_agent"] = owner
        res = self.sessions[caller].tool("recall", **args)
        if not self._may_read(caller, owner, ns):
            assert res["isError"] and "has not granted" in res["content"][0]["text"], res
            return
        assert not res["isError"], res
        self._check_visible(caller, owner, ns, res["structuredContent"]["memories"])

    @rule(caller=st.sampled_from(AGENTS), owner=st.sampled_from(AGENTS), ns=st.sampled_from(NAMESPACES))
    def list_memories(self, caller: str, owner: str, ns: str | None) -> None:
        args: dict[str, Any] = {"limit": 200, **_ns(ns)}
        if caller != owner:
            args["from_agent"] = owner
        res = self.sessions[caller].tool("list_memories", **args)
        if not self._may_read(caller, owner, ns):
            assert res["isError"] and "has not granted" in res["content"][0]["text"], res
            return
        assert not res["isError"], res
        memories = res["structuredContent"]["memories"]
        self._check_visible(caller, owner, ns, memories)
        if len(LEDGER[(owner, ns)]) < 200:
            assert {m["id"] for m in memories} == LEDGER[(owner, ns)]  # nothing lost, nothing extra

    @rule(owner=st.sampled_from(AGENTS), ns=st.sampled_from(NAMESPACES), data=st.data())
    def grant(self, owner: str, ns: str | None, data: st.DataObject) -> None:
        grantee = "bob" if owner == "alice" else "alice"
        if data.draw(st.booleans(), label="revoke"):
            res = self.sessions[owner].tool("revoke", to_agent=grantee, **_ns(ns))
            self.grants.discard((owner, grantee, ns))
        else:
            res = self.sessions[owner].tool("grant", to_agent=grantee, **_ns(ns))
            self.grants.add((owner, grantee, ns))
        assert not res["isError"], res

    @precondition(lambda self: any(self.mine.values()))
    @rule(caller=st.sampled_from(AGENTS), data=st.data())
    def forget_or_update_the_others(self, caller: str, data: st.DataObject) -> None:
        other = "bob" if caller == "alice" else "alice"
        ns = data.draw(st.sampled_from(NAMESPACES), label="ns")
        ids = self.mine[(other, ns)]
        if not ids:
            return
        mid = data.draw(st.sampled_from(ids), label="id")
        s = self.sessions[caller]
        # Even with a grant, the other agent's memories are read-only: forget finds nothing to delete in the
        # caller's own namespace, update finds no such memory.
        assert s.tool("forget", ids=[mid], **_ns(ns))["structuredContent"]["deleted"] == 0
        res = s.tool("update", id=mid, text="overwritten by the other agent", **_ns(ns))
        assert res["isError"] and "no memory" in res["content"][0]["text"]
        # The owner still reads it, unchanged. (Read by id: a listing pages oldest first, and the server
        # outlives examples, so after 200 memories a newer one is not on the first page.)
        uri = f"memory://{other}/{mid}" + (f"?namespace={ns}" if ns else "")
        got = self.sessions[other].request("resources/read", {"uri": uri})
        assert "result" in got, (caller, ns, mid, got)
        kept = json.loads(got["result"]["contents"][0]["text"])
        assert kept["id"] == mid and kept["text"] != "overwritten by the other agent", (caller, ns, kept)

    @precondition(lambda self: any(self.mine.values()))
    @rule(caller=st.sampled_from(AGENTS), data=st.data())
    def forget_own(self, caller: str, data: st.DataObject) -> None:
        ns = data.draw(st.sampled_from(NAMESPACES), label="ns")
        ids = self.mine[(caller, ns)]
        if len(ids) < 2:
            return
        mid = data.draw(st.sampled_from(ids), label="id")
        res = self.sessions[caller].tool("forget", ids=[mid], **_ns(ns))
        assert res["structuredContent"]["deleted"] == 1
        LEDGER[(caller, ns)].discard(mid)
        ids.remove(mid)

    @precondition(lambda self: any(self.mine.values()))
    @rule(caller=st.sampled_from(AGENTS), data=st.data())
    def read_resource(self, caller: str, data: st.DataObject) -> None:
        owner, ns = data.draw(st.sampled_from([k for k, v in self.mine.items() if v]), label="where")
        mid = data.draw(st.sampled_from(self.mine[(owner, ns)]), label="id")
        uri = f"memory://{owner}/{mid}" + (f"?namespace={ns}" if ns else "")
        res = self.sessions[caller].request("resources/read", {"uri": uri})
        if self._may_read(caller, owner, ns):
            assert "result" in res, res
            assert json.loads(res["result"]["contents"][0]["text"])["id"] == mid
        else:
            assert "error" in res and "has not granted" in res["error"]["message"], res

    @rule(
        caller=st.sampled_from(AGENTS),
        credential=st.sampled_from(["none", "wrong", "other", "malformed", "empty-bearer"]),
    )
    def bad_credentials(self, caller: str, credential: str) -> None:
        other = "bob" if caller == "alice" else "alice"
        authorization = {
            "none": None,
            "wrong": f"Bearer {secrets.token_urlsafe(24)}",
            "other": f"Bearer {TOKENS[other]}",  # a valid token, but not the one that opened this session
            "malformed": TOKENS[caller],  # no "Bearer " scheme
            "empty-bearer": "Bearer",
        }[credential]
        res = self.sessions[caller].request(
            "tools/call",
            {"name": "list_memories", "arguments": {"from_agent": other, "limit": 200}},
            Authorization=authorization,
        )
        # Never an answer: 401 without a valid token; a valid token on another agent's session is refused.
        assert set(res) == {"http_status"}, res
        assert res["http_status"] == 401 if credential != "other" else res["http_status"] in (401, 403, 404)

    @rule(caller=st.sampled_from(AGENTS), authenticated=st.booleans(), chunked=st.booleans())
    def oversized_body(self, caller: str, authenticated: bool, chunked: bool) -> None:
        body = b'{"jsonrpc": "2.0", "id": 9, "method": "ping", "pad": "' + b"x" * (LIMIT + 10) + b'"}'
        headers = {**MCP_HEADERS, "mcp-session-id": self.sessions[caller].headers["mcp-session-id"]}
        if authenticated:
            headers["Authorization"] = f"Bearer {TOKENS[caller]}"
        content: Any = iter([body[i : i + 8192] for i in range(0, len(body), 8192)]) if chunked else body
        r = self.sessions[caller].http.post(self.url, content=content, headers=headers)
        assert r.status_code == (413 if authenticated else 401), (authenticated, chunked, r.status_code)


def _ns(ns: str | None) -> dict[str, str]:
    return {} if ns is None else {"namespace": ns}


@posix_only
@pytest.mark.slow
def test_two_principals_over_http(http_server: Any) -> None:
    TwoPrincipals.url = f"{http_server.url}/mcp"
    machine = TwoPrincipals.TestCase
    machine.settings = settings(
        max_examples=4,
        stateful_step_count=15,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    machine().runTest()
