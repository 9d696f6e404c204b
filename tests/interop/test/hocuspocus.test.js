// The stock @hocuspocus/provider (what Tiptap uses) against the relay's /hocuspocus endpoint:
// many documents over one socket, convergence with y-websocket clients, in-band tokens (refused,
// read-only), stateless messages, awareness, a late joiner, kill -9, and malformed messages.

import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'

import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'

import {
  RawClient, interopTest, roomName, waitForDocs, waitForEvent, waitUntil
} from './harness.js'

const SECRET = 'interop-secret-interop-secret-interop-secret'

/** An HS256 client token for the relay. */
function token (claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`
  return `${body}.${createHmac('sha256', SECRET).update(body).digest('base64url')}`
}

/** One provider socket (many documents share it) to the relay's Hocuspocus endpoint. */
function socket (env, relay) {
  const ws = new HocuspocusProviderWebsocket({
    url: `ws://127.0.0.1:${relay.port}/hocuspocus`,
    WebSocketPolyfill: WebSocket
  })
  env.hocuspocus ??= []
  env.hocuspocus.push(ws)
  return ws
}

/** A provider for document `name` on `ws`, attached. */
function provider (env, ws, name, opts = {}) {
  const p = new HocuspocusProvider({ websocketProvider: ws, name, document: new Y.Doc(), ...opts })
  p.attach()
  env.hocuspocusProviders ??= []
  env.hocuspocusProviders.push(p)
  return p
}

async function synced (p) {
  await waitUntil(`provider for ${p.configuration.name} to sync`, () => p.synced, (poll) => {
    p.on('synced', poll)
    return () => p.off('synced', poll)
  })
  return p
}

/** Resolves once every update the provider sent is acknowledged as saved. */
function saved (p) {
  return waitUntil(`the relay to acknowledge ${p.configuration.name}'s updates`,
    () => p.synced && p.unsyncedChanges === 0, (poll) => {
      p.on('unsyncedChanges', poll)
      p.on('synced', poll)
      return () => { p.off('unsyncedChanges', poll); p.off('synced', poll) }
    })
}

function closeAll (env) {
  for (const p of env.hocuspocusProviders ?? []) { try { p.destroy() } catch {} }
  for (const ws of env.hocuspocus ?? []) { try { ws.destroy() } catch {} }
  env.hocuspocusProviders = []
  env.hocuspocus = []
}

/** Runs `fn` and closes every Hocuspocus socket afterwards, passed or failed. */
function hocuspocusTest (name, options, fn) {
  interopTest(name, { ...options, needsHocuspocus: true }, async (env, t) => {
    try {
      await fn(env, t)
    } finally {
      closeAll(env)
    }
  })
}

const text = (p) => p.document.getText('body').toString()
const append = (p, s) => p.document.getText('body').insert(p.document.getText('body').length, s)

hocuspocusTest('several documents over one provider socket sync, and every update is acknowledged as saved', {}, async (env) => {
  const relay = await env.startRelay()
  const names = [roomName('hp-a'), roomName('hp-b'), roomName('hp-c')]
  const left = socket(env, relay)
  const right = socket(env, relay)
  const lefts = await Promise.all(names.map((name) => synced(provider(env, left, name))))
  const rights = await Promise.all(names.map((name) => synced(provider(env, right, name))))
  lefts.forEach((p, i) => append(p, `left ${i};`))
  rights.forEach((p, i) => append(p, `right ${i};`))
  for (let i = 0; i < names.length; i++) {
    await waitForDocs([lefts[i].document, rights[i].document], `document ${i} to converge`,
      () => text(lefts[i]) === text(rights[i]) && text(lefts[i]).length === `left ${i};right ${i};`.length)
    assert.ok(text(lefts[i]).includes(`left ${i};`) && text(lefts[i]).includes(`right ${i};`))
    // Nothing of another document leaked in.
    assert.ok(!text(lefts[i]).includes(`${(i + 1) % 3};`))
  }
  await Promise.all([...lefts, ...rights].map(saved))
})

hocuspocusTest('a Hocuspocus provider and a y-websocket provider on one document converge', {}, async (env) => {
  const relay = await env.startRelay()
  const name = roomName('hp-mixed')
  const hp = await synced(provider(env, socket(env, relay), name))
  const yws = await env.syncedProvider(relay, name)
  append(hp, 'from tiptap;')
  yws.doc.getText('body').insert(0, 'from y-websocket;')
  await waitForDocs([hp.document, yws.doc], 'both clients to hold both edits',
    () => text(hp) === yws.doc.getText('body').toString() && text(hp).length === 'from tiptap;from y-websocket;'.length)
  await saved(hp)
})

hocuspocusTest('a late joiner gets the whole document and presence travels between Hocuspocus clients', {}, async (env) => {
  const relay = await env.startRelay()
  const name = roomName('hp-late')
  const first = await synced(provider(env, socket(env, relay), name))
  for (let i = 0; i < 50; i++) append(first, `${i};`)
  await saved(first)
  first.setAwarenessField('user', { name: 'ada' })
  const late = await synced(provider(env, socket(env, relay), name))
  assert.equal(text(late), text(first))
  await waitUntil('the late joiner to see the first client\'s presence',
    () => [...late.awareness.getStates().values()].some((s) => s.user?.name === 'ada'),
    (poll) => { late.awareness.on('change', poll); return () => late.awareness.off('change', poll) })
})

hocuspocusTest('stateless messages reach the document\'s other connections, not the sender or other documents', {}, async (env) => {
  const relay = await env.startRelay()
  const name = roomName('hp-stateless')
  const sender = await synced(provider(env, socket(env, relay), name))
  const receiver = await synced(provider(env, socket(env, relay), name))
  const elsewhere = await synced(provider(env, socket(env, relay), roomName('hp-other')))
  const heard = { sender: [], elsewhere: [] }
  sender.on('stateless', ({ payload }) => heard.sender.push(payload))
  elsewhere.on('stateless', ({ payload }) => heard.elsewhere.push(payload))
  const got = waitForEvent(receiver, 'stateless', 'the stateless message', ({ payload }) => payload === '{"typing":true}')
  sender.sendStateless('{"typing":true}')
  await got
  // An edit after it, round trip through the relay, shows the sender would have had it by now.
  append(sender, 'x')
  await saved(sender)
  assert.deepEqual(heard, { sender: [], elsewhere: [] })
})

hocuspocusTest('tokens: a bad one is refused for its document only, a read-only one syncs but cannot write', {}, async (env) => {
  const relay = await env.startRelay({ args: ['--jwt-secret', SECRET] })
  const name = roomName('hp-auth')
  const writer = await synced(provider(env, socket(env, relay), name, {
    token: token({ sub: 'ada', docs: [name], perm: 'write' })
  }))
  append(writer, 'written;')
  await saved(writer)

  const shared = socket(env, relay)
  const refused = provider(env, shared, name, { token: 'not-a-token' })
  const [{ reason }] = await waitForEvent(refused, 'authenticationFailed', 'the bad token to be refused')
  assert.match(reason, /token/)
  const other = provider(env, shared, name, { token: token({ sub: 'bob', docs: ['elsewhere'], perm: 'write' }) })
  await waitForEvent(other, 'authenticationFailed', 'a token for another document to be refused')

  // The same socket still serves a document its token covers, read-only.
  const reader = provider(env, shared, name, {
    token: token({ sub: 'cy', docs: [name], perm: 'read' }),
    // A second provider for the same name on one socket needs its own session.
    sessionAwareness: true
  })
  const [{ scope }] = await waitForEvent(reader, 'authenticated', 'the read token to be accepted')
  assert.equal(scope, 'readonly')
  await synced(reader)
  assert.equal(text(reader), 'written;')
  append(reader, 'not allowed;')
  await waitUntil('the read-only edit to be answered as not saved', () => reader.unsyncedChanges > 0 && reader.synced, (poll) => {
    reader.on('unsyncedChanges', poll)
    return () => reader.off('unsyncedChanges', poll)
  })
  // The writer keeps writing and the reader follows; the refused edit never reaches the writer.
  append(writer, 'more;')
  await waitForDocs(reader.document, 'the reader to follow the writer', () => text(reader).includes('more;'))
  await saved(writer)
  assert.equal(text(writer), 'written;more;')
})

hocuspocusTest('default durability: whatever a Hocuspocus client was told is saved survives kill -9', {}, async (env) => {
  const first = await env.startRelay()
  const names = [roomName('hp-kill-a'), roomName('hp-kill-b')]
  const ws = socket(env, first)
  const writers = await Promise.all(names.map((name) => synced(provider(env, ws, name))))
  for (let i = 0; i < 200; i++) writers.forEach((p) => append(p, `${i};`))
  await Promise.all(writers.map(saved))
  const expected = writers.map(text)
  await first.kill('SIGKILL')
  closeAll(env) // no client may refill the restarted relay
  const second = await env.startRelay({ dataDir: first.dataDir })
  const fresh = socket(env, second)
  for (let i = 0; i < names.length; i++) {
    const p = await synced(provider(env, fresh, names[i]))
    assert.equal(text(p), expected[i], `document ${i} after kill -9 and restart`)
  }
})

hocuspocusTest('a malformed prefixed message closes only its own connection, with 1002', {}, async (env) => {
  const relay = await env.startRelay()
  const name = roomName('hp-bad')
  const good = await synced(provider(env, socket(env, relay), name))
  const watcher = await synced(provider(env, socket(env, relay), name))
  append(good, 'before;')
  await saved(good)

  const raw = await RawClient.open(`ws://127.0.0.1:${relay.port}/hocuspocus`)
  env.rawClients.push(raw)
  const e = encoding.createEncoder()
  encoding.writeVarString(e, name)
  encoding.writeVarUint(e, 42) // no such message type
  raw.send(encoding.toUint8Array(e))
  const closed = await raw.closed
  assert.equal(closed.code, 1002)
  assert.match(closed.reason, /unknown message type 42/)

  append(good, 'after;')
  await waitForDocs(watcher.document, 'the other connections to go on', () => text(watcher) === 'before;after;')
  await saved(good)
})
