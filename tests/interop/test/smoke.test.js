// The relay starts, answers its health check, and a stock provider syncs with it.

import assert from 'node:assert/strict'

import { interopTest, roomName, waitSynced } from './harness.js'

interopTest('GET /healthz answers 200 and a stock provider completes its initial sync', {}, async (env) => {
  const relay = await env.startRelay()

  const res = await fetch(`${relay.httpUrl}/healthz`)
  assert.equal(res.status, 200, `GET /healthz returned ${res.status}`)

  const { provider, doc } = env.provider(relay, roomName('smoke'))
  await waitSynced(provider)
  assert.equal(doc.getText('t').toString(), '', 'a new room starts empty')
})
