"""Hostile HTTP input against a real server: wrong methods, bad bodies and query strings, path
traversal on /_app/, odd urlPaths, very long URLs and malformed requests on a raw socket.

Every answer is the documented status with a JSON message, and the server keeps serving.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import trio

from arbiter.testing import SfuRegistry, make_config, new_room, running_server, ws_client

NOT_ALLOWED = {"message": "Method not allowed"}
NOT_FOUND = {"message": "Not found"}
MISSING = {"message": "missing urlPath"}
TOO_LARGE = {"message": "Request body too large"}


def json_of(r: httpx.Response) -> dict:
    assert r.headers["Content-Type"] == "application/json", r.headers
    return r.json()


async def raw_request(url: str, data: bytes) -> bytes:
    """Send bytes on a fresh TCP connection; return the start of the answer."""
    host, port = url.removeprefix("http://").split(":")
    sock = trio.socket.socket()
    with sock:
        await sock.connect((host, int(port)))
        await sock.send(data)
        out = b""
        with trio.move_on_after(1):  # only the truncated request waits this long: no answer
            while chunk := await sock.recv(65536):
                out += chunk
                head, sep, body = out.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if sep and length and len(body) >= int(length.group(1)):
                    break  # a whole answer: do not wait for the server to close
    return out


async def test_wrong_methods_on_every_route(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path), SfuRegistry()) as srv:
        wrong = {
            "/getRoomId?urlPath=a": ["POST", "PUT", "PATCH", "DELETE"],
            "/claimRoom": ["POST", "PUT", "DELETE"],
            "/createRoom": ["PATCH", "DELETE"],
            "/health": ["POST", "PUT", "PATCH", "DELETE", "TRACE"],
            "/config": ["POST", "PUT", "DELETE"],
            "/metrics": ["POST", "DELETE"],
            "/_app/app.js": ["POST", "PUT", "DELETE"],
            "/": ["POST", "PUT", "PATCH", "DELETE"],
            "/some-room": ["POST", "PUT", "PATCH", "DELETE"],
            "/ws": ["POST", "PATCH"],
        }
        for url, methods in wrong.items():
            for method in methods:
                r = await srv.http.request(method, url)
                assert (r.status_code, json_of(r)) == (405, NOT_ALLOWED), (method, url)
        # Decision: any GET path is a room name, so GET on an API route without a GET is the
        # web client (a room called "createRoom"), never an API call.
        for url in ("/createRoom", "/claimRoom"):
            r = await srv.http.get(url)
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
        assert (await srv.http.get("/health")).json()["rooms"]["unclaimed"] == 0


async def test_bad_bodies_for_claim_room(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path), SfuRegistry()) as srv:
        room = await new_room(srv, "real")
        bodies = [
            b"", b"null", b"[]", b'"real"', b"5", b"{}", b'{"urlPath": 5}', b'{"urlPath": null}',
            b'{"urlPath": ["real"]}', b'{"urlPath": ""}', b'{"urlPath": "///"}',
            b'{"urlPath": "a\\u0000b"}', b'{"urlPath": "a\\nb"}', b'{"urlPath": "\\u007f"}',
            b'{"urlPath": "' + b"a" * 201 + b'"}', b"\xff\xfe\x00", b"{'urlPath': 'real'}",
            b'{"urlPath": "real"', b"[" * 5000 + b"]" * 5000, b'{"urlPath": NaN}',
        ]  # fmt: skip
        for body in bodies:
            r = await srv.http.patch("/claimRoom", content=body)
            assert (r.status_code, json_of(r)) == (400, MISSING), body[:40]
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "nonsense"):
            r = await srv.http.patch(
                "/claimRoom", content=b'{"urlPath": "real"}', headers={"Content-Type": content_type}
            )
            # The body is JSON whatever the header says (the deployed client sent text/plain).
            assert (r.status_code, json_of(r)) == (200, {"roomId": room})
        limit = max(make_config(tmp_path).limits.max_message_bytes, 16384)
        fits = b'{"urlPath": "real"}' + b" " * (limit - 19)
        assert len(fits) == limit
        r = await srv.http.patch("/claimRoom", content=fits)
        assert (r.status_code, json_of(r)) == (200, {"roomId": room})
        # (Bodies of megabytes are refused the same way, but the server closes while the client
        # is still uploading, so the client may see a reset instead of reading the 413.)
        for body in (fits + b" ", b"[" * 100_000):
            r = await srv.http.patch("/claimRoom", content=body)
            assert (r.status_code, json_of(r)) == (413, TOO_LARGE)
            r = await srv.http.put("/createRoom", content=body)
            assert (r.status_code, json_of(r)) == (413, TOO_LARGE)
        # No claim happened through any of it: still exactly one claimed room.
        assert (await srv.http.get("/health")).json()["rooms"]["claimed"] == 1


async def test_bad_query_strings_and_url_paths(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path), SfuRegistry()) as srv:
        room = await new_room(srv, "été/ünï")
        found = {"roomId": room, "id": room, "urlPath": "été/ünï", "passwordRequired": False}
        cases: list[tuple[str, int, dict]] = [
            ("/getRoomId", 400, MISSING),
            ("/getRoomId?urlPath", 400, MISSING),
            ("/getRoomId?urlPath=", 400, MISSING),
            ("/getRoomId?urlPath=%2F%2F", 400, MISSING),
            ("/getRoomId?urlPath=a%00b", 400, MISSING),
            ("/getRoomId?urlPath=a%0Ab", 400, MISSING),
            ("/getRoomId?urlPath=a%7Fb", 400, MISSING),
            ("/getRoomId?urlPath=" + "a" * 201, 400, MISSING),
            ("/getRoomId?urlPath=" + "a" * 20000, 400, MISSING),
            ("/getRoomId?urlPath=" + "a" * 200, 404, {"message": "Room not found"}),
            ("/getRoomId?urlPath=%ff%fe", 404, {"message": "Room not found"}),
            ("/getRoomId?urlPath=%zz", 404, {"message": "Room not found"}),
            ("/getRoomId?urlPath=%E2%80%AE", 404, {"message": "Room not found"}),
            ("/getRoomId?urlPath=%27%20OR%201%3D1--", 404, {"message": "Room not found"}),
            ("/getRoomId?urlPath=%C3%A9t%C3%A9/%C3%BCn%C3%AF", 200, found),
            ("/getRoomId?urlPath=/%C3%A9t%C3%A9/%C3%BCn%C3%AF/", 200, found),
            ("/getRoomId?urlPath=%C3%A9t%C3%A9/%C3%BCn%C3%AF&urlPath=x", 200, found),  # first wins
            ("/getRoomId?x=1&&&=&urlPath=%C3%A9t%C3%A9/%C3%BCn%C3%AF", 200, found),
        ]
        for url, status, body in cases:
            r = await srv.http.get(url)
            assert (r.status_code, json_of(r)) == (status, body), url[:60]


async def test_path_traversal_on_app_assets(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path), SfuRegistry()) as srv:
        ok = await srv.http.get("/_app/app.js")
        assert ok.status_code == 200 and ok.headers["Content-Type"].startswith("text/javascript")
        for url in (
            "/_app/%2e%2e/config.py",
            "/_app/..%2fconfig.py",
            "/_app/..%2F..%2Farbiter.toml",
            "/_app/%2e%2e%2f%2e%2e%2fsetup.cfg",
            "/_app/%00",
            "/_app/app.js%00.html",
            "/_app/app.js%0a",
            "/_app/%5c..%5cconfig.py",
            "/_app/" + "a" * 5000,
            "/_app/nothing.js",
        ):
            r = await srv.http.get(url)
            assert (r.status_code, json_of(r)) == (404, NOT_FOUND), url[:60]
        # Raw paths (no client-side normalisation): a ".." inside /_app/ is refused; anything
        # else is a room name, answered with the web client, never a file from disk.
        index = (await srv.http.get("/")).content
        for raw_path, status, body in (
            (b"/_app/../arbiter.toml", b"404", b'{"message":"Not found"}'),
            (b"/_app/..%2f..%2fsetup.cfg", b"404", b'{"message":"Not found"}'),
            (b"/_app//etc/passwd", b"200", index),
            (b"/%2e%2e/%2e%2e/etc/passwd", b"200", index),
            (b"/../../etc/passwd", b"200", index),
        ):
            answer = await raw_request(
                srv.url, b"GET " + raw_path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            head, _, got = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 " + status), (raw_path, head)
            assert got == body, raw_path
        assert (await srv.http.get("/health")).status_code == 200


async def test_malformed_requests_on_a_raw_socket(tmp_path: Path) -> None:
    """What never reaches the app is answered by hypercorn's HTTP/1.1 parser (empty body)."""
    async with running_server(make_config(tmp_path), SfuRegistry()) as srv:
        cases = [
            (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 431"),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"b" * 100_000 + b"\r\n\r\n", b"HTTP/1.1 431"),
            (b"GARBAGE\r\n\r\n", b"HTTP/1.1 400"),
            (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, b"HTTP/1.1 400"),
            (b"PATCH /claimRoom HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{", b""),
        ]  # fmt: skip
        for request, start in cases:
            answer = await raw_request(srv.url, request)
            assert answer.startswith(start), (request[:40], answer[:80])
        # A truncated body never reached the handler; the server answers the next caller.
        r = await srv.http.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "ok"
        room = await new_room(srv, "after")
        async with ws_client(srv.ws_url) as c:
            await c.identify_client(room, "after")


@pytest.mark.parametrize("count", [200])
async def test_many_concurrent_bad_requests_leave_it_serving(tmp_path: Path, count: int) -> None:
    async with running_server(make_config(tmp_path), SfuRegistry()) as srv:
        statuses: list[int] = []

        async def one(i: int) -> None:
            url = ["/getRoomId?urlPath=%00", "/_app/%00", "/nope/../../x", "/claimRoom"][i % 4]
            method = ["GET", "GET", "DELETE", "PATCH"][i % 4]
            r = await srv.http.request(method, url, content=b"[" * (i * 97 % 20000))
            statuses.append(r.status_code)

        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(one, i)
        assert sorted(set(statuses)) == [400, 404, 405]
        assert len(statuses) == count
        assert (await srv.http.get("/health")).status_code == 200
