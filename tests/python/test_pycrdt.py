"""Python clients are first-class: the published pycrdt and pycrdt-websocket packages (what
Jupyter collaboration uses) against the real relay, beside stock y-websocket clients."""

from __future__ import annotations

import pytest

from conftest import js_peer, py_peer, wait_until, wait_until_async

pytestmark = pytest.mark.anyio


async def test_python_and_javascript_clients_converge_and_a_late_python_joiner_gets_everything(relay):
    room = "mixed"
    async with py_peer(relay, room) as ada, py_peer(relay, room) as bob, js_peer(relay, room) as js:
        ada.insert("alpha;")
        bob.insert("beta;")
        await js.insert("gamma;")
        pieces = ("alpha;", "beta;", "gamma;")
        for peer in (ada, bob):
            await wait_until("every edit at a Python client",
                             lambda: all(p in peer.content() for p in pieces))
        final = (await js.wait_for("alpha;")) and (await js.wait_for("beta;"))
        assert ada.content() == bob.content() == final["text"], "the clients diverged"
        assert sorted(final["text"].split(";")[:-1]) == ["alpha", "beta", "gamma"]
    async with py_peer(relay, room) as late:
        assert late.content() == final["text"]


async def test_one_edit_reaches_each_client_once_and_echoes_are_not_stored(relay):
    room = "echoes"
    async with py_peer(relay, room) as p1, py_peer(relay, room) as p2, \
            py_peer(relay, room) as p3, js_peer(relay, room) as js:
        pythons = (p1, p2, p3)
        before = [p.channel.updates for p in pythons]
        js_before = (await js.report())["updates"]
        received = await relay.metric("aetherflow_updates_received_total")

        p1.insert("one edit;")
        for peer in pythons:
            await wait_until("the edit at every Python client", lambda: "one edit;" in peer.content())
        await js.wait_for("one edit;")
        # pycrdt's provider sends back every update it applies: wait until the relay has had
        # the other two Python clients' copies, then make a second edit as a barrier.
        await wait_until_async(
            "the echoes of the other Python clients at the relay",
            lambda: _at_least(relay, "aetherflow_updates_received_total", received + 3),
        )
        await js.insert("barrier;")
        for peer in pythons:
            await wait_until("the barrier at every Python client", lambda: "barrier;" in peer.content())
        frames = [p.channel.updates - b for p, b in zip(pythons, before)]
        assert frames == [2, 2, 2], f"update frames per Python client for two edits: {frames}"
        # The JavaScript client sent the barrier; a third edit tells when its echo is in.
        p2.insert("end;")
        js_after = await js.wait_for("end;")
        assert js_after["updates"] - js_before == 3, "the JavaScript client got echoes"
        assert await relay.metric("aetherflow_updates_redundant_total") >= 2
        assert (await relay.document(room))["updates"] == 3, "echoes were stored"


async def test_a_python_joiner_does_not_rebroadcast_the_document(relay):
    room = "joiner"
    async with js_peer(relay, room) as js:
        await js.insert("x" * 5000)
        await js.wait_for("x" * 5000)
        stored = (await relay.document(room))["updates"]
        before = (await js.report())["updates"]
        received = await relay.metric("aetherflow_updates_received_total")
        async with py_peer(relay, room) as joiner:
            assert joiner.content() == "x" * 5000
            # The joiner sends back the whole document it was just given.
            await wait_until_async(
                "the joiner's copy of the document at the relay",
                lambda: _at_least(relay, "aetherflow_updates_received_total", received + 1),
            )
            # An edit of the joiner's: anything it sent before reaches the others first.
            joiner.insert("!")
            after = await js.wait_for("!")
        assert after["updates"] - before == 1, "the joiner's copy was sent to the others"
        assert (await relay.document(room))["updates"] == stored + 1


async def _at_least(relay, metric: str, value: float) -> bool:
    return await relay.metric(metric) >= value
