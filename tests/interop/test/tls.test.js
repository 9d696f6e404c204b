// The relay terminating TLS itself (--tls-cert, --tls-key): stock y-websocket providers sync
// over wss:// when they trust the relay's CA (passed with the `ws` polyfill's `ca` option),
// and a client that does not trust it is refused by its own TLS check. The certificates are
// made by the test with the openssl command-line tool.

import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

import { interopTest, roomName, waitForDocs, waitSynced, WebSocket, withTimeout } from './harness.js'

/** A test CA and a relay certificate for 127.0.0.1 and localhost signed by it, in `dir`. */
function makeCertificates (dir) {
  const openssl = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=AetherFlow interop test CA')
  openssl('req', ...ec, '-keyout', 'relay.key', '-out', 'relay.csr', '-subj', '/CN=localhost')
  writeFileSync(path.join(dir, 'relay.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  openssl('x509', '-req', '-in', 'relay.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'relay.pem', '-days', '2', '-extfile', 'relay.ext')
  return {
    ca: readFileSync(path.join(dir, 'ca.pem')),
    args: ['--tls-cert', path.join(dir, 'relay.pem'), '--tls-key', path.join(dir, 'relay.key')]
  }
}

/** `ws` trusting `ca` besides node's roots, as a WebsocketProvider polyfill. */
function trusting (ca) {
  return class TrustingWebSocket extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols, { ca })
    }
  }
}

interopTest('stock providers sync over wss:// with the relay terminating TLS; an untrusting client is refused', { needsTls: true }, async (env) => {
  const certs = makeCertificates(await env.tempDir())
  const relay = await env.startRelay({ args: certs.args })
  assert.ok(relay.wsBase.startsWith('wss://'), `the relay announced ${relay.httpUrl}`)
  const room = roomName('tls')

  const a = env.provider(relay, room, { WebSocketPolyfill: trusting(certs.ca) })
  const b = env.provider(relay, room, { WebSocketPolyfill: trusting(certs.ca) })
  await waitSynced(a.provider)
  await waitSynced(b.provider)
  a.doc.getText('t').insert(0, 'over TLS from a;')
  await waitForDocs(b.doc, 'b to get a\'s edit over wss', () => b.doc.getText('t').toString() === 'over TLS from a;')
  b.doc.getText('t').insert(b.doc.getText('t').length, 'and from b')
  await waitForDocs(a.doc, 'a to get b\'s edit over wss',
    () => a.doc.getText('t').toString() === 'over TLS from a;and from b')

  // Without the CA, node's TLS check refuses the relay's certificate: no connection opens.
  const untrusting = new WebSocket(`${relay.wsBase}/${room}`)
  const error = await withTimeout(new Promise((resolve) => {
    untrusting.once('open', () => resolve(null))
    untrusting.once('error', resolve)
  }), 'a client without the CA to fail')
  assert.ok(error, 'a client that does not trust the CA must not connect')
  assert.match(String(error.code), /CERT|SIGNATURE/, `expected a certificate error, got ${error.code}: ${error.message}`)
})
