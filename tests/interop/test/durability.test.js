// What a client has seen survives the relay: kill -9 in default (durable) mode, and a clean
// shutdown (SIGTERM) that closes every WebSocket with 1001 and exits 0.

import assert from 'node:assert/strict'

import {
  IS_REFERENCE, interopTest, roomName, waitForDocs, waitForEvent, withTimeout
} from './harness.js'

const N = 300

/** Writes edits [from, to) from `doc`, one transaction each. */
function writeEdits (doc, from, to) {
  for (let i = from; i < to; i++) {
    doc.transact(() => {
      doc.getArray('edits').push([i])
      doc.getText('log').insert(doc.getText('log').length, `${i};`)
    })
  }
}

function expectedLog (n) {
  return Array.from({ length: n }, (_, i) => `${i};`).join('')
}

/** Asserts `doc` holds exactly edits 0..n-1, in order. */
function assertEdits (doc, n, when) {
  const edits = doc.getArray('edits').toArray()
  assert.equal(edits.length, n, `${when}: expected ${n} edits, found ${edits.length}`)
  assert.deepEqual(edits, Array.from({ length: n }, (_, i) => i), `${when}: edits out of order or wrong`)
  assert.equal(doc.getText('log').toString(), expectedLog(n), `${when}: text differs`)
}

/** Writer writes [from, to); resolves once a second client has seen all of them through the relay. */
async function writeAndWitness (env, relay, room, from, to) {
  const writer = await env.syncedProvider(relay, room)
  const witness = await env.syncedProvider(relay, room)
  writeEdits(writer.doc, from, to)
  await waitForDocs(witness.doc, `the witness to see all ${to} edits`,
    () => witness.doc.getArray('edits').length === to)
  return { writer, witness }
}

interopTest('default durability: every edit a client has seen survives SIGKILL of the relay', { needsPersistence: true }, async (env) => {
  const room = roomName('kill9')
  const first = await env.startRelay()
  await writeAndWitness(env, first, room, 0, N)

  const status = await first.kill('SIGKILL')
  assert.equal(status.signal, 'SIGKILL')
  env.destroyProviders() // no client may refill the restarted relay

  const second = await env.startRelay({ dataDir: first.dataDir })
  const fresh = await env.syncedProvider(second, room)
  assertEdits(fresh.doc, N, 'after the first SIGKILL and restart')

  // Edits made on top of recovered state survive a second kill too.
  env.destroyProviders()
  await writeAndWitness(env, second, room, N, 2 * N)
  await second.kill('SIGKILL')
  env.destroyProviders()

  const third = await env.startRelay({ dataDir: first.dataDir })
  const again = await env.syncedProvider(third, room)
  assertEdits(again.doc, 2 * N, 'after the second SIGKILL and restart')
})

/**
 * SIGTERM: a raw client and a stock provider both get close code 1001 and the process exits 0.
 * Returns the relay's data dir.
 */
async function shutDownCleanly (env, relay, room, n) {
  const { writer } = await writeAndWitness(env, relay, room, 0, n)
  const raw = await env.rawClient(relay, room)
  await raw.waitMessage('sync step 1 on connect', (m) => m.type === 'sync' && m.sub === 'step1')

  const providerClose = waitForEvent(writer.provider, 'connection-close',
    'the stock provider\'s WebSocket to close after SIGTERM')
  const exit = relay.kill('SIGTERM')
  const closed = await withTimeout(raw.closed, 'the raw client\'s WebSocket to close after SIGTERM')
  assert.equal(closed.code, 1001, `raw client got close code ${closed.code} (1006 means no close frame was sent)`)
  const [event] = await providerClose
  assert.equal(event?.code, 1001, `stock provider got close code ${event?.code}`)
  const status = await exit
  assert.deepEqual(status, { code: 0, signal: null }, `relay exited with ${JSON.stringify(status)} after SIGTERM`)
  env.destroyProviders()
}

interopTest('SIGTERM closes every WebSocket with 1001, exits 0, and the content is there after restart', {}, async (env) => {
  const room = roomName('sigterm')
  const relay = await env.startRelay()
  await shutDownCleanly(env, relay, room, 50)
  if (IS_REFERENCE) return // the reference server keeps nothing across restarts

  const restarted = await env.startRelay({ dataDir: relay.dataDir })
  const fresh = await env.syncedProvider(restarted, room)
  assertEdits(fresh.doc, 50, 'after SIGTERM and restart')
})

interopTest('relaxed durability: a clean shutdown still keeps every edit', { needsPersistence: true }, async (env) => {
  const room = roomName('relaxed')
  const relay = await env.startRelay({ args: ['--durability', 'relaxed'] })
  await shutDownCleanly(env, relay, room, N)

  const restarted = await env.startRelay({ dataDir: relay.dataDir, args: ['--durability', 'relaxed'] })
  const fresh = await env.syncedProvider(restarted, room)
  assertEdits(fresh.doc, N, 'after SIGTERM and restart in relaxed mode')
})
