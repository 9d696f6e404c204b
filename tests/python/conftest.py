"""Harness of the Python interop tests: the real relay binary on port 0 with a temporary data
dir, pycrdt clients (`pycrdt.Provider` over `httpx-ws`, as pycrdt-websocket documents), and stock
y-websocket clients in Node processes (tests/interop/test/fixtures/text-peer.js).

Every wait is bounded by TIMEOUT and fails with what it waited for; none asserts on timing."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator, Callable

import anyio
import httpx
import pytest
from httpx_ws import aconnect_ws
from pycrdt import Doc, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("AETHERFLOW_BIN", REPO / "target" / "debug" / "aetherflow"))
TEXT_PEER = REPO / "tests" / "interop" / "test" / "fixtures" / "text-peer.js"
TIMEOUT = float(os.environ.get("INTEROP_TIMEOUT_SECS", "20"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Relay:
    """A relay process; `http` is its base URL, `ws` the base of its y-websocket URLs."""

    def __init__(self, *args: str) -> None:
        if not BIN.exists():
            raise RuntimeError(f"relay binary {BIN} missing: cargo build -p aetherflow-server")
        self._dir = tempfile.TemporaryDirectory()
        self._log = open(Path(self._dir.name) / "relay.log", "w+b")
        self.process = subprocess.Popen(
            [str(BIN), "--http-addr", "127.0.0.1:0", "--quantum-addr", "off",
             "--data-dir", str(Path(self._dir.name) / "data"), *args],
            stdout=subprocess.PIPE, stderr=self._log, env={**os.environ, "RUST_LOG": "info"},
        )
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.process.stdout.readline().decode()))
        reader.start()
        reader.join(TIMEOUT)
        match = re.match(r"aetherflow ready: (http://\S+)", ready[0] if ready else "")
        if not match:
            self.stop()
            raise RuntimeError(f"relay did not start: {self.logs()}")
        self.http = match.group(1)
        self.ws = self.http.replace("http://", "ws://") + "/ws"

    def logs(self) -> str:
        self._log.flush()
        return (Path(self._dir.name) / "relay.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def close(self) -> None:
        self.stop()
        self._log.close()
        self._dir.cleanup()

    async def metric(self, name: str) -> float:
        """The value of an unlabelled metric (open to loopback without an admin key)."""
        async with httpx.AsyncClient() as client:
            body = (await client.get(f"{self.http}/metrics")).text
        match = re.search(rf"^{re.escape(name)} (\S+)$", body, re.MULTILINE)
        assert match, f"{name} not in /metrics"
        return float(match.group(1))

    async def document(self, name: str) -> dict:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.http}/api/v1/docs/{name}")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def relay() -> Relay:
    relay = Relay()
    yield relay
    relay.close()


async def wait_until(what: str, check: Callable[[], object]) -> None:
    """Polls `check` until it is truthy; fails after TIMEOUT naming `what`."""
    try:
        with anyio.fail_after(TIMEOUT):
            while not check():
                await anyio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def wait_until_async(what: str, check) -> None:
    """`wait_until` for an async check."""
    try:
        with anyio.fail_after(TIMEOUT):
            while not await check():
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class CountingChannel(HttpxWebsocket):
    """pycrdt-websocket's httpx channel, counting the sync update frames the relay sends."""

    def __init__(self, websocket, path: str) -> None:
        super().__init__(websocket, path)
        self.updates = 0

    async def recv(self) -> bytes:
        message = await super().recv()
        if message[:2] == b"\x00\x02":
            self.updates += 1
        return message


class PyPeer:
    """A pycrdt client: its document, the text "t", and its channel."""

    def __init__(self, doc: Doc, channel: CountingChannel) -> None:
        self.doc = doc
        self.channel = channel
        self.text = doc.get("t", type=Text)

    def insert(self, s: str) -> None:
        with self.doc.transaction():
            self.text += s

    def content(self) -> str:
        return str(self.text)


@asynccontextmanager
async def py_peer(relay: Relay, room: str) -> AsyncIterator[PyPeer]:
    """A pycrdt client on `room`, synced with the relay."""
    doc = Doc()
    doc.get("t", type=Text)
    async with aconnect_ws(f"{relay.http}/ws/{room}") as websocket:
        channel = CountingChannel(websocket, room)
        async with Provider(doc, channel) as provider:
            with anyio.fail_after(TIMEOUT):
                await provider.synced.wait()
            yield PyPeer(doc, channel)


class JsPeer:
    """A stock y-websocket client in a Node process (text-peer.js)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def _line(self) -> dict:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        assert line, "the JavaScript peer exited"
        return json.loads(line)

    async def _send(self, command: dict) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()

    async def insert(self, s: str) -> None:
        await self._send({"insert": s})

    async def report(self) -> dict:
        """{"text", "updates"}: its text and how many sync update frames it has received."""
        await self._send({"report": True})
        return await self._line()

    async def wait_for(self, s: str) -> dict:
        """Its report, once its text contains `s`."""
        await self._send({"wait_for": s})
        return await self._line()


@asynccontextmanager
async def js_peer(relay: Relay, room: str) -> AsyncIterator[JsPeer]:
    if not (REPO / "tests" / "interop" / "node_modules" / "y-websocket").exists():
        raise RuntimeError("tests/interop/node_modules missing: run npm ci in tests/interop")
    process = await asyncio.create_subprocess_exec(
        "node", str(TEXT_PEER), relay.ws, room,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    peer = JsPeer(process)
    try:
        hello = await peer._line()
        assert hello.get("synced"), hello
        yield peer
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
