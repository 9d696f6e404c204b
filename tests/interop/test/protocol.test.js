// The wire conventions of y-websocket, checked with bare `ws` clients encoding by hand:
// sync step 1 on connect, one message per frame, updates echoed to every connection of the
// room including the sender's.

import assert from 'node:assert/strict'

import * as awarenessProtocol from 'y-protocols/awareness'
import * as encoding from 'lib0/encoding'

import {
  IS_REFERENCE, MSG_AWARENESS, SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE, Y,
  encodeSync, interopTest, roomName, waitForDocs, withTimeout
} from './harness.js'

/** Connects a raw client and completes the handshake a real provider does. */
async function joinRaw (env, relay, room) {
  const client = await env.rawClient(relay, room)
  const step1 = await client.waitMessage('sync step 1 from the server on connect',
    (m) => m.type === 'sync' && m.sub === 'step1')
  // Answer with what the server lacks (nothing) and ask for what we lack, as a provider does.
  const empty = new Y.Doc()
  client.send(encodeSync(SYNC_STEP2, Y.encodeStateAsUpdate(empty, step1.payload)))
  client.send(encodeSync(SYNC_STEP1, Y.encodeStateVector(empty)))
  await client.waitMessage('sync step 2 in reply to our step 1', (m) => m.type === 'sync' && m.sub === 'step2')
  return client
}

/** The text a set of received update messages yields when applied to a fresh doc. */
function textOf (messages) {
  const doc = new Y.Doc()
  for (const m of messages) Y.applyUpdate(doc, m.payload)
  return doc.getText('t').toString()
}

function assertOneMessagePerFrame (client, name) {
  assert.deepEqual(client.frameErrors, [], `${name} received frames that were not exactly one message`)
  assert.ok(client.messages.length > 0, `${name} received no frames`)
}

interopTest('a sync update is echoed to its sender and to every other connection, one message per frame', {}, async (env) => {
  const relay = await env.startRelay()
  const room = roomName('echo')
  const sender = await joinRaw(env, relay, room)
  const other = await joinRaw(env, relay, room)

  const author = new Y.Doc()
  author.getText('t').insert(0, 'hello from a raw client')
  const update = Y.encodeStateAsUpdate(author)

  const fromSender = sender.messages.length
  const fromOther = other.messages.length
  sender.send(encodeSync(SYNC_UPDATE, update))

  const isUpdate = (m) => m.type === 'sync' && m.sub === 'update'
  const echo = await sender.waitMessage('the sender to receive its own update back (messageSync/update)',
    (m) => isUpdate(m) && textOf([m]) === 'hello from a raw client', { from: fromSender })
  const relayed = await other.waitMessage('the second client to receive the update (messageSync/update)',
    (m) => isUpdate(m) && textOf([m]) === 'hello from a raw client', { from: fromOther })

  // The echo carries the sender's content, whatever encoding the server chose.
  const echoDoc = new Y.Doc()
  Y.applyUpdate(echoDoc, echo.payload)
  assert.equal(echoDoc.getText('t').toString(), 'hello from a raw client')
  assert.deepEqual(Y.decodeStateVector(Y.encodeStateVector(echoDoc)), Y.decodeStateVector(Y.encodeStateVector(author)))
  assert.equal(textOf([relayed]), 'hello from a raw client')

  assertOneMessagePerFrame(sender, 'the sender')
  assertOneMessagePerFrame(other, 'the second client')
})

interopTest('an awareness update is echoed to its sender and to every other connection', {}, async (env) => {
  const relay = await env.startRelay()
  const room = roomName('awareness-echo')
  const sender = await joinRaw(env, relay, room)
  const other = await joinRaw(env, relay, room)

  const doc = new Y.Doc()
  const awareness = new awarenessProtocol.Awareness(doc)
  awareness.setLocalState({ user: { name: 'raw' } })
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_AWARENESS)
  encoding.writeVarUint8Array(e, awarenessProtocol.encodeAwarenessUpdate(awareness, [doc.clientID]))
  awareness.destroy() // stops its renewal timer; the encoded update is all we need
  const fromSender = sender.messages.length
  const fromOther = other.messages.length
  sender.send(encoding.toUint8Array(e))

  const carriesState = (m) => {
    if (m.type !== 'awareness') return false
    const probe = new awarenessProtocol.Awareness(new Y.Doc())
    try {
      awarenessProtocol.applyAwarenessUpdate(probe, m.payload, 'test')
      return probe.getStates().get(doc.clientID)?.user?.name === 'raw'
    } finally {
      probe.destroy() // an Awareness keeps an interval timer alive until destroyed
    }
  }
  await sender.waitMessage('the sender to receive its awareness update back', carriesState, { from: fromSender })
  await other.waitMessage('the second client to receive the awareness update', carriesState, { from: fromOther })
  assertOneMessagePerFrame(sender, 'the sender')
  assertOneMessagePerFrame(other, 'the second client')
})

interopTest('a raw client gets a stock provider\'s content in the sync step 2 it asks for', {}, async (env) => {
  const relay = await env.startRelay()
  const room = roomName('raw-step2')
  const writer = await env.syncedProvider(relay, room)
  const witness = await env.syncedProvider(relay, room)
  writer.doc.getText('t').insert(0, 'provider wrote this')
  // The witness seeing the text proves the relay holds it.
  await waitForDocs(witness.doc, 'the witness provider to receive the writer\'s text',
    () => witness.doc.getText('t').toString() === 'provider wrote this')

  const raw = await env.rawClient(relay, room)
  const step1 = await raw.waitMessage('sync step 1 on connect', (m) => m.type === 'sync' && m.sub === 'step1')
  assert.equal(Y.decodeStateVector(step1.payload).get(writer.doc.clientID),
    Y.decodeStateVector(Y.encodeStateVector(writer.doc)).get(writer.doc.clientID),
    'the relay\'s sync step 1 announces the writer\'s update in its state vector')
  const from = raw.messages.length
  raw.send(encodeSync(SYNC_STEP1, Y.encodeStateVector(new Y.Doc())))
  const reply = await raw.waitMessage('sync step 2 in reply to an empty state vector',
    (m) => m.type === 'sync' && m.sub === 'step2', { from })
  assert.equal(textOf([reply]), 'provider wrote this')
  assertOneMessagePerFrame(raw, 'the raw client')
})

interopTest('a close the client starts is answered: ws reports its own code, not 1006', {}, async (env) => {
  const relay = await env.startRelay()
  for (const code of [1000, 4000]) {
    const client = await joinRaw(env, relay, roomName('client-close'))
    client.ws.close(code, 'leaving')
    const closed = await withTimeout(client.closed, `the close handshake for code ${code}`)
    // ws reports 1006 when the connection ends without the server's close frame.
    assert.equal(closed.code, code, `closed with ${closed.code} ${closed.reason}`)
  }
})

interopTest('stock providers leaving with destroy() leave no WARN in the relay\'s log', {}, async (env, t) => {
  if (IS_REFERENCE) return t.skip('the relay\'s log is what is checked')
  const relay = await env.startRelay({ args: ['--quantum-addr', 'off'] })
  const room = roomName('destroy')
  // Start-up warnings (running without auth) are not about sessions.
  const startup = relay.stderr.length
  // Departures were misread as slow clients about one time in three: 30 make a miss unlikely.
  for (let i = 0; i < 30; i++) {
    const { provider, awareness } = await env.syncedProvider(relay, room)
    awareness.setLocalStateField('user', { name: `visitor ${i}` })
    provider.destroy()
  }
  // Every session has ended, so every departure is in the room's inbox before the join below,
  // and handled before that provider is synced.
  const open = /^aetherflow_connections\{transport="websocket"\} (\d+)$/m
  await withTimeout((async () => {
    for (;;) {
      const text = await (await fetch(`${relay.httpUrl}/metrics`)).text()
      if (open.exec(text)?.[1] === '0') return
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  })(), 'every destroyed provider\'s session to end')
  await env.syncedProvider(relay, room)
  const warnings = relay.stderr.slice(startup).split('\n').filter((line) => /\bWARN\b/.test(line))
  assert.deepEqual(warnings, [], 'normal departures must not be logged as warnings')
})
