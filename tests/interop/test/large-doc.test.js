// A document of a few thousand operations reaches a late joiner whole.

import assert from 'node:assert/strict'

import { interopTest, roomName, waitForDocs } from './harness.js'

const INSERTS = 2000

const VARIANTS = [
  { label: '', args: [] },
  // The room may unload as soon as the writers leave and reload from a store that compaction
  // has folded many times; the late joiner must not see the difference.
  { label: ' (unload when idle, compact every 50 updates)', args: ['--unload-after-secs', '0', '--compact-after-updates', '50'] }
]

for (const { label, args } of VARIANTS) {
  interopTest(`a document of ${INSERTS} single inserts plus a bulk transaction syncs fully to a late joiner${label}`, {}, async (env) => {
    const relay = await env.startRelay({ args })
    const room = roomName('large')
    const writer = await env.syncedProvider(relay, room)
    const witness = await env.syncedProvider(relay, room)

    // Many small transactions (one update each) ...
    const text = writer.doc.getText('body')
    for (let i = 0; i < INSERTS; i++) {
      text.insert(i % 2 === 0 ? text.length : Math.floor(text.length / 2), String.fromCharCode(97 + (i % 26)))
    }
    // ... and one large one.
    writer.doc.transact(() => {
      const rows = writer.doc.getArray('rows')
      for (let i = 0; i < INSERTS; i++) rows.push([{ id: i, label: `row ${i}`, pad: 'x'.repeat(32) }])
    })
    const expectedText = text.toString()

    await waitForDocs(witness.doc, 'the witness to receive the whole document',
      () => witness.doc.getText('body').length === INSERTS && witness.doc.getArray('rows').length === INSERTS)
    env.destroyProviders()

    const late = await env.syncedProvider(relay, room)
    assert.equal(late.doc.getText('body').toString(), expectedText)
    const rows = late.doc.getArray('rows').toArray()
    assert.equal(rows.length, INSERTS)
    assert.deepEqual(rows[INSERTS - 1], { id: INSERTS - 1, label: `row ${INSERTS - 1}`, pad: 'x'.repeat(32) })
    assert.ok(rows.every((r, i) => r.id === i), 'rows arrive complete and in order')
  })
}
