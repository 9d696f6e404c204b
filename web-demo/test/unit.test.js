// Unit tests of the page's pure parts, in Node: document name rules, the pending-changes mirror,
// the update rate, the history panel's rules.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'

import { docNameProblem, docNameFromSearch, docHref, DEFAULT_DOC_NAME } from '../src/doc-name.js'
import { RelayMirror } from '../src/relay-mirror.js'
import { RateMeter } from '../src/live-stats.js'
import { PALETTE, awarenessUser, contrastWithWhite, freeColor, freeName, readableColor } from '../src/identity.js'
import { HybridClock, compareStamps } from '../src/hlc.js'
import { companionNames } from '../src/register-panels.js'
import { loadToken, authHeaders } from '../src/token.js'
import {
  authorColors, formatBytes, formatWhen, historyProblem, labelProblem, runAuthors, runPieces, tokenCanWrite, versionRow
} from '../src/history-view.js'

test('document names follow the relay’s rules', () => {
  for (const ok of ['notes', 'team notes 2024', 'ünïcødé-📝', 'a.b_c-d', 'x'.repeat(255), 'é'.repeat(127)]) {
    assert.equal(docNameProblem(ok), null, ok)
  }
  assert.match(docNameProblem(''), /Enter/)
  assert.match(docNameProblem('x'.repeat(256)), /255 bytes/)
  assert.match(docNameProblem('é'.repeat(128)), /256/, 'bytes of UTF-8, not characters')
  for (const bad of ['a\nb', 'tab\there', '\u0000', 'del\u007f', 'c1\u0085']) {
    assert.match(docNameProblem(bad), /control/, JSON.stringify(bad))
  }
  assert.match(docNameProblem('a/b'), /\//)
  assert.match(docNameProblem('a\\b'), /\\/)
})

test('the address names the document; it round-trips through docHref', () => {
  assert.deepEqual(docNameFromSearch(''), { name: DEFAULT_DOC_NAME, problem: null })
  assert.deepEqual(docNameFromSearch('?doc='), { name: DEFAULT_DOC_NAME, problem: null })
  for (const name of ['team notes', 'a&b=c?#d', '📝 100%']) {
    assert.deepEqual(docNameFromSearch(docHref(name)), { name, problem: null })
  }
  assert.match(docNameFromSearch('?doc=a%2Fb').problem, /\//)
})

test('the awareness user has the fields y-codemirror.next draws', () => {
  assert.deepEqual(awarenessUser({ name: ' Ada ', color: '#1f77b4' }), { name: 'Ada', color: '#1f77b4', colorLight: '#1f77b433' })
  assert.equal(awarenessUser({ name: '  ', color: '#000000' }).name, 'Anonymous')
})

/** A stand-in for WebsocketProvider's message dispatch: what RelayMirror hooks into. */
function fakeProvider (doc) {
  const provider = {
    on () {},
    messageHandlers: [(_encoder, decoder) => {
      const kind = decoding.readVarUint(decoder)
      const payload = decoding.readVarUint8Array(decoder)
      if (kind !== 0) Y.applyUpdate(doc, payload, provider)
    }]
  }
  /** Delivers a sync message (kind 0 step1, 1 step2, 2 update) as from the socket or a tab. */
  provider.deliver = (kind, payload, fromSocket = true) => {
    const e = encoding.createEncoder()
    encoding.writeVarUint(e, kind)
    encoding.writeVarUint8Array(e, payload)
    provider.messageHandlers[0](encoding.createEncoder(), decoding.createDecoder(encoding.toUint8Array(e)), provider, fromSocket, 0)
  }
  return provider
}

test('a local change is pending until the relay sends it back, deletions included', () => {
  const doc = new Y.Doc()
  const provider = fakeProvider(doc)
  const mirror = new RelayMirror(doc, provider)
  const local = []
  doc.on('update', (update, origin) => { if (origin !== provider) local.push(update) })
  assert.equal(mirror.pending, false)

  doc.getText('content').insert(0, 'hello')
  assert.equal(mirror.pending, true)
  provider.deliver(2, local.shift()) // the relay's echo
  assert.equal(mirror.pending, false)

  doc.getText('content').delete(0, 1) // a deletion does not move the state vector
  assert.equal(mirror.pending, true)
  // The relay batches: its echo may be a merge of several updates.
  doc.getText('content').insert(0, 'J')
  provider.deliver(2, Y.mergeUpdates(local.splice(0)))
  assert.equal(mirror.pending, false)

  // Someone else's update through the relay is not pending work of ours.
  const other = new Y.Doc()
  Y.applyUpdate(other, Y.encodeStateAsUpdate(doc))
  other.getText('content').insert(0, '> ')
  provider.deliver(2, Y.encodeStateAsUpdate(other, Y.encodeStateVector(doc)))
  assert.equal(doc.getText('content').toString(), '> Jello')
  assert.equal(mirror.pending, false)
})

test('changes from another tab (BroadcastChannel) are pending until the relay confirms them', () => {
  const doc = new Y.Doc()
  const provider = fakeProvider(doc)
  const mirror = new RelayMirror(doc, provider)
  const tab = new Y.Doc()
  tab.getText('content').insert(0, 'from the other tab')
  const update = Y.encodeStateAsUpdate(tab)
  provider.deliver(2, update, false)
  assert.equal(doc.getText('content').toString(), 'from the other tab')
  assert.equal(mirror.pending, true)
  provider.deliver(2, update, true)
  assert.equal(mirror.pending, false)
})

test('the update rate is averaged over its window', () => {
  const meter = new RateMeter(5000)
  for (let t = 0; t < 1000; t += 100) meter.record(t)
  assert.equal(meter.perSecond(1000), 2)
  assert.equal(meter.perSecond(5050), 1.8, 'the event at 0 fell out of the window')
  assert.equal(meter.perSecond(10_000), 0)
})

test('the hybrid clock never runs backwards and always passes what it saw', () => {
  const clock = new HybridClock()
  assert.deepEqual(clock.tick(1000), { wall_ms: 1000, counter: 0 })
  // The same millisecond, or a clock that went back: the counter moves on.
  assert.deepEqual(clock.tick(1000), { wall_ms: 1000, counter: 1 })
  assert.deepEqual(clock.tick(900), { wall_ms: 1000, counter: 2 })
  // A stamp seen from a tab whose clock runs ahead: the next local stamp exceeds it.
  clock.observe({ wall_ms: 5000, counter: 7 })
  assert.deepEqual(clock.tick(1001), { wall_ms: 5000, counter: 8 })
  // An older stamp changes nothing.
  clock.observe({ wall_ms: 10, counter: 0 })
  assert.deepEqual(clock.tick(1002), { wall_ms: 5000, counter: 9 })
})

test('write stamps order by clock, then writer, as on the relay', () => {
  const at = (wall_ms, counter, writer) => ({ clock: { wall_ms, counter }, writer })
  assert.ok(compareStamps(at(2, 0, 'a'), at(1, 9, 'z')) > 0)
  assert.ok(compareStamps(at(1, 1, 'a'), at(1, 0, 'z')) > 0)
  assert.ok(compareStamps(at(1, 1, 'b'), at(1, 1, 'a')) > 0)
  assert.equal(compareStamps(at(1, 1, 'a'), at(1, 1, 'a')), 0)
})

test('the title and notes documents sit next to the text, when the name leaves room', () => {
  assert.deepEqual(companionNames('plan'), { title: 'plan.title', notes: 'plan.notes' })
  assert.ok(companionNames('x'.repeat(249)))
  assert.equal(companionNames('x'.repeat(250)), null)
})

test('a token given in the address is kept for the tab and sent as a bearer token', () => {
  const store = new Map()
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) }
  assert.equal(loadToken('?doc=a', storage), null, 'no token: the relay must be open')
  assert.equal(loadToken('?doc=a&token=abc.def.ghi', storage), 'abc.def.ghi')
  assert.equal(loadToken('?doc=b', storage), 'abc.def.ghi', 'remembered when opening another document')
  assert.deepEqual(authHeaders('abc.def.ghi'), { authorization: 'Bearer abc.def.ghi' })
  assert.deepEqual(authHeaders(null), {})
})

test('every palette colour and every colour a person picks carries a white name label at 4.5:1 or more', () => {
  assert.equal(new Set(PALETTE).size, PALETTE.length)
  assert.ok(PALETTE.length >= 12)
  for (const color of PALETTE) {
    assert.ok(contrastWithWhite(color) >= 4.5, `${color}: ${contrastWithWhite(color).toFixed(2)}:1`)
    assert.equal(readableColor(color), color, 'palette colours are shown as they are')
  }
  for (const picked of ['#ffffff', '#ffff00', '#2ca02c', '#e377c2', '#9467bd', '#00ffff', '#000000', '#808080']) {
    const shown = awarenessUser({ name: 'Ada', color: picked }).color
    assert.ok(contrastWithWhite(shown) >= 4.5, `${picked} shown as ${shown}: ${contrastWithWhite(shown).toFixed(2)}:1`)
  }
  assert.equal(readableColor('not a colour'), PALETTE[0])
})

test('a tab takes the next free name and palette colour', () => {
  assert.equal(freeName('Ada', ['Bob']), 'Ada')
  assert.equal(freeName('Ada', ['Ada', 'Ada (2)']), 'Ada (3)')
  assert.equal(freeColor([PALETTE[0], PALETTE[1]]), PALETTE[2])
  assert.ok(PALETTE.includes(freeColor(PALETTE)))
})

const MINUTE = 60_000

test('a version row says when, who, how much and its name', () => {
  const now = Date.UTC(2026, 0, 2, 12, 0)
  const version = { id: 41, first_seq: 30, time_ms: now - 5 * MINUTE, started_ms: now - 9 * MINUTE, authors: ['ada', 'bob'], bytes: 1536, entries: 12, label: 'sent to client' }
  assert.deepEqual(versionRow(version, now), {
    when: '5 min ago',
    authors: 'ada, bob',
    size: '12 changes, 1.5 KB',
    label: 'sent to client',
    summary: 'Version 41, “sent to client”, 5 min ago by ada, bob, 12 changes, 1.5 KB'
  })
  const single = versionRow({ ...version, time_ms: now - 1000, entries: 1, bytes: 20, label: null }, now)
  assert.equal(single.summary, 'Version 41, just now by ada, bob, 1 change, 20 B')
  assert.equal(single.label, null)
  assert.equal(formatWhen(now - 3 * 3_600_000, now), new Date(now - 3 * 3_600_000).toLocaleString(), 'older: the date and time')
  assert.equal(formatWhen(now + 5000, now), 'just now', 'a relay clock slightly ahead is not "in the future"')
  assert.equal(formatBytes(3 * 1024 * 1024), '3.0 MB')
})

test('each author keeps one readable colour, in order of appearance', () => {
  const colors = authorColors(['bob', 'ada', 'bob', 'cleo'])
  assert.deepEqual([...colors.keys()], ['bob', 'ada', 'cleo'])
  assert.equal(new Set(colors.values()).size, 3)
  for (const color of colors.values()) assert.ok(contrastWithWhite(color) >= 4.5)
  assert.equal(authorColors(PALETTE.map((_, i) => `p${i}`).concat('one more')).get('one more'), PALETTE[0], 'the palette wraps')
  const kept = authorColors(['dan', 'bob'], colors)
  assert.equal(kept, colors, 'extended in place')
  assert.equal(kept.get('bob'), authorColors(['bob']).get('bob'), 'bob keeps his colour')
  assert.equal(kept.get('dan'), PALETTE[3], 'a newcomer takes the next one')
})

test('diff runs become pieces marked with who wrote or deleted them', () => {
  const runs = [
    { kind: 'kept', text: 'Hello ', by: ['ada'] },
    { kind: 'deleted', text: 'world', by: ['bob'] },
    { kind: 'inserted', text: 'Bob', by: ['bob'] },
    { kind: 'inserted', text: '', by: ['ada'] },
    { kind: 'inserted', text: '!', by: [] },
    { kind: 'inserted', text: '?', by: ['ada', 'bob'] }
  ]
  assert.deepEqual(runAuthors(runs), ['bob', 'anonymous', 'ada'], 'kept text credits nobody in the legend')
  const colors = authorColors(runAuthors(runs))
  assert.deepEqual(runPieces(runs, colors), [
    { tag: 'span', text: 'Hello ', author: null, color: null },
    { tag: 'del', text: 'world', author: 'bob', color: colors.get('bob') },
    { tag: 'ins', text: 'Bob', author: 'bob', color: colors.get('bob') },
    { tag: 'ins', text: '!', author: 'anonymous', color: colors.get('anonymous') },
    { tag: 'ins', text: '?', author: 'ada, bob', color: colors.get('ada') }
  ])
})

test('a refused history request is explained, a relay without history first', () => {
  const without = { error: { code: 'not_in_cluster_mode', message: 'version history is not available' } }
  assert.match(historyProblem(501, without), /not available on this relay/)
  assert.match(historyProblem(403, { error: { code: 'forbidden', message: 'x' } }), /token does not allow/)
  assert.match(historyProblem(401, null), /token/)
  assert.equal(historyProblem(400, { error: { code: 'bad_request', message: 'a label is 1 to 200 bytes' } }),
    'The relay refused: a label is 1 to 200 bytes')
  assert.equal(historyProblem(500, null), 'The relay answered 500.')
  assert.match(historyProblem(503, null), /busy/)
})

test('only write tokens (or none, on an open relay) offer restore and naming', () => {
  const token = (claims) => `${Buffer.from('{"alg":"HS256"}').toString('base64url')}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.sig`
  assert.equal(tokenCanWrite(null), true)
  assert.equal(tokenCanWrite(token({ sub: 'ada', perm: 'write' })), true)
  assert.equal(tokenCanWrite(token({ sub: 'ada', perm: 'read' })), false)
  assert.equal(tokenCanWrite(token({ sub: 'ädä', docs: ['ü*'], perm: 'write' })), true, 'UTF-8 claims decode')
  assert.equal(tokenCanWrite('not-a-jwt'), false)
  assert.equal(tokenCanWrite('a.%%%.c'), false)
  assert.equal(labelProblem('  '), 'Enter a name for the version.')
  assert.equal(labelProblem(' draft '), null)
})
