// Awareness through the relay: states reach other clients, and when a client vanishes without
// saying goodbye the relay itself broadcasts its removal.

import assert from 'node:assert/strict'

import { EVENT_TIMEOUT_MS, interopTest, roomName, waitForEvent, waitUntil } from './harness.js'

// y-protocols drops a remote awareness state by itself after 30 s without renewal
// (outdatedTimeout); waiting well under that proves the removal came from the server.
const REMOVAL_TIMEOUT_MS = Math.min(EVENT_TIMEOUT_MS, 15_000)

/** Resolves once `awareness` holds `clientID` with `user.name === name`. */
function waitForUser (awareness, clientID, name, what) {
  return waitUntil(what, () => awareness.getStates().get(clientID)?.user?.name === name, (poll) => {
    awareness.on('change', poll)
    return () => awareness.off('change', poll)
  })
}

interopTest('awareness reaches other clients and is removed by the relay when a client dies', {}, async (env) => {
  const relay = await env.startRelay()
  const room = roomName('awareness')
  const observer = await env.syncedProvider(relay, room)

  const peer = env.spawnNode('awareness-peer.js', [relay.wsBase, room, 'Ada'])
  const [{ clientID }] = await waitUntil('the child peer to sync and report its clientID',
    () => peer.lines.length > 0 && peer.lines, (poll) => {
      peer.on('line', poll)
      peer.on('exit', poll)
      return () => { peer.off('line', poll); peer.off('exit', poll) }
    })
  assert.equal(typeof clientID, 'number', `child printed ${JSON.stringify(peer.lines)}`)

  // Broadcast: a client already in the room sees the peer's state.
  await waitForUser(observer.awareness, clientID, 'Ada', 'the observer to see the peer\'s user field')

  // On connect: a client joining now gets the states the relay already holds.
  const lateObserver = env.provider(relay, room)
  await waitForUser(lateObserver.awareness, clientID, 'Ada', 'a late observer to receive the peer\'s user field on connect')

  // The peer dies abruptly: no close frame, no awareness removal of its own.
  const removedFrom = (obs) => waitForEvent(obs.awareness, 'change',
    `the relay to broadcast removal of awareness client ${clientID} within ${REMOVAL_TIMEOUT_MS} ms of the peer's SIGKILL`,
    ({ removed }) => removed.includes(clientID), REMOVAL_TIMEOUT_MS)
  const removals = [removedFrom(observer), removedFrom(lateObserver)]
  peer.kill('SIGKILL')

  for (const [name, removal] of [['observer', removals[0]], ['late observer', removals[1]]]) {
    const [, origin] = await removal
    assert.notEqual(origin, 'timeout', `${name} dropped the state by its own timeout, not by a message from the relay`)
    assert.equal(observer.awareness.getStates().has(clientID), false)
  }
  assert.equal(lateObserver.awareness.getStates().has(clientID), false)
})

interopTest('awareness field updates from one provider reach another, and a clean disconnect removes them', {}, async (env) => {
  const relay = await env.startRelay()
  const room = roomName('awareness-fields')
  const a = await env.syncedProvider(relay, room)
  const b = await env.syncedProvider(relay, room)

  a.awareness.setLocalStateField('user', { name: 'Grace', color: '#ee6352' })
  await waitForUser(b.awareness, a.doc.clientID, 'Grace', 'B to see A\'s user field')

  a.awareness.setLocalStateField('cursor', { anchor: 3, head: 5 })
  await waitUntil('B to see A\'s cursor field',
    () => b.awareness.getStates().get(a.doc.clientID)?.cursor?.head === 5,
    (poll) => { b.awareness.on('change', poll); return () => b.awareness.off('change', poll) })

  // A leaving cleanly removes its state everywhere as well.
  const removal = waitForEvent(b.awareness, 'change', 'B to see A\'s awareness removed after A disconnects',
    ({ removed }) => removed.includes(a.doc.clientID), REMOVAL_TIMEOUT_MS)
  a.provider.disconnect()
  await removal
  assert.equal(b.awareness.getStates().has(a.doc.clientID), false)
})
