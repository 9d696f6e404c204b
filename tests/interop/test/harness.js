// Shared helpers for the interop suite: start and stop the relay, connect stock
// y-websocket providers and raw `ws` clients, wait on events with a timeout,
// and clean everything up even when a test fails.
//
// Modes (env INTEROP_SERVER):
//   aetherflow (default)  the relay binary, env AETHERFLOW_BIN or <repo>/target/debug/aetherflow
//   reference             the y-websocket reference server (@y/websocket-server), wrapped by
//                         fixtures/reference-server.js; no persistence, so tests that restart the
//                         server are skipped in this mode.

import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, test } from 'node:test'

import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'

const here = path.dirname(fileURLToPath(import.meta.url))
export const REPO_ROOT = path.resolve(here, '..', '..', '..')

export const MODE = process.env.INTEROP_SERVER === 'reference' ? 'reference' : 'aetherflow'
export const IS_REFERENCE = MODE === 'reference'

/** Generous upper bound for any single awaited event; a test fails with a clear message past it. */
export const EVENT_TIMEOUT_MS = Number(process.env.INTEROP_TIMEOUT_MS || 20_000)
/** How long the relay may take to print its ready line. */
const READY_TIMEOUT_MS = 30_000
/** How long the relay may take to exit after a signal. */
const EXIT_TIMEOUT_MS = 15_000

/** The relay's ready line: scheme (`https` when it terminates TLS), address, port. */
export const READY_LINE = /ready: (https?):\/\/([0-9.]+):(\d+)/

// y-websocket message types and sync sub-types.
export const MSG_SYNC = 0
export const MSG_AWARENESS = 1
export const MSG_AUTH = 2
export const MSG_QUERY_AWARENESS = 3
export const SYNC_STEP1 = 0
export const SYNC_STEP2 = 1
export const SYNC_UPDATE = 2
const SYNC_NAMES = ['step1', 'step2', 'update']

/** Every child process spawned by this file, so none outlives the test process. */
const liveChildren = new Set()
process.on('exit', () => {
  for (const child of liveChildren) {
    try { child.kill('SIGKILL') } catch {}
  }
})

// A leaked timer or socket must not hang the whole run: once every test of the file is done,
// give the process a moment to exit on its own, then end it.
after(() => {
  setTimeout(() => {
    console.error('interop harness: open handles kept the test process alive after its tests; exiting')
    process.exit()
  }, 5000).unref()
})

// ---------------------------------------------------------------------------
// Waiting on events

/**
 * Resolves once `check()` returns a truthy value. `check` runs now and again each time
 * `subscribe`'s callback fires. Rejects after `timeoutMs` with a message naming `what`.
 *
 * @template T
 * @param {string} what  what we are waiting for, for the failure message
 * @param {() => T} check
 * @param {(onChange: (...args: any[]) => void) => (() => void)} subscribe  returns unsubscribe
 * @param {number} [timeoutMs]
 * @returns {Promise<T>}
 */
export function waitUntil (what, check, subscribe, timeoutMs = EVENT_TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    let done = false
    let unsubscribe = () => {}
    const finish = (err, value) => {
      if (done) return
      done = true
      clearTimeout(timer)
      unsubscribe()
      err ? reject(err) : resolve(value)
    }
    const timer = setTimeout(() => {
      let state = ''
      try { state = ` (last state: ${describe(check())})` } catch {}
      finish(new Error(`timed out after ${timeoutMs} ms waiting for ${what}${state}`))
    }, timeoutMs)
    const poll = () => {
      if (done) return
      try {
        const value = check()
        if (value) finish(null, value)
      } catch (err) {
        finish(err)
      }
    }
    unsubscribe = subscribe(poll)
    poll()
  })
}

function describe (value) {
  const s = typeof value === 'string' ? value : JSON.stringify(value)
  return s === undefined ? String(value) : s.length > 200 ? s.slice(0, 200) + '…' : s
}

/**
 * Resolves with the arguments of the first `event` on `emitter` for which `predicate(...args)`
 * holds. Works with Node EventEmitters and lib0 Observables (Y.Doc, Awareness, providers).
 *
 * @returns {Promise<any[]>}
 */
export function waitForEvent (emitter, event, what, predicate = () => true, timeoutMs = EVENT_TIMEOUT_MS) {
  let seen = null
  return waitUntil(
    what,
    () => seen,
    (poll) => {
      const handler = (...args) => {
        if (seen === null && predicate(...args)) {
          seen = args
          poll()
        }
      }
      emitter.on(event, handler)
      return () => emitter.off(event, handler)
    },
    timeoutMs
  )
}

/**
 * Resolves once `check()` holds, re-checking after every 'update' on any of `docs`.
 */
export function waitForDocs (docs, what, check, timeoutMs = EVENT_TIMEOUT_MS) {
  const list = Array.isArray(docs) ? docs : [docs]
  return waitUntil(what, check, (poll) => {
    for (const doc of list) doc.on('update', poll)
    return () => { for (const doc of list) doc.off('update', poll) }
  }, timeoutMs)
}

/** Resolves once the provider has completed its initial sync with the server. */
export function waitSynced (provider, what = `provider for room ${provider.roomname} to sync`) {
  return waitUntil(what, () => provider.synced, (poll) => {
    provider.on('sync', poll)
    return () => provider.off('sync', poll)
  })
}

/** Races a promise against a timeout that fails with `what`. */
export function withTimeout (promise, what, timeoutMs = EVENT_TIMEOUT_MS) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// ---------------------------------------------------------------------------
// y-websocket frames

/**
 * Decodes one WebSocket frame as exactly one y-websocket message. Throws if the frame holds
 * trailing bytes (more than one message per frame) or an unknown message type.
 */
export function decodeFrame (bytes) {
  const d = decoding.createDecoder(bytes)
  const type = decoding.readVarUint(d)
  let msg
  switch (type) {
    case MSG_SYNC: {
      const sub = decoding.readVarUint(d)
      if (!(sub in SYNC_NAMES)) throw new Error(`unknown sync sub-type ${sub}`)
      msg = { type: 'sync', sub: SYNC_NAMES[sub], payload: decoding.readVarUint8Array(d) }
      break
    }
    case MSG_AWARENESS:
      msg = { type: 'awareness', payload: decoding.readVarUint8Array(d) }
      break
    case MSG_AUTH: {
      const permission = decoding.readVarUint(d)
      msg = { type: 'auth', permission, reason: decoding.hasContent(d) ? decoding.readVarString(d) : '' }
      break
    }
    case MSG_QUERY_AWARENESS:
      msg = { type: 'queryAwareness' }
      break
    default:
      throw new Error(`unknown message type ${type}`)
  }
  if (decoding.hasContent(d)) {
    throw new Error(`frame of ${bytes.length} bytes has ${bytes.length - d.pos} bytes left after one ` +
      `${msg.type}${msg.sub ? '/' + msg.sub : ''} message: more than one message per frame?`)
  }
  msg.bytes = bytes
  return msg
}

/** Encodes a messageSync frame: step1 carries a state vector, step2 and update carry an update. */
export function encodeSync (sub, payload) {
  const e = encoding.createEncoder()
  encoding.writeVarUint(e, MSG_SYNC)
  encoding.writeVarUint(e, sub)
  encoding.writeVarUint8Array(e, payload)
  return encoding.toUint8Array(e)
}

/**
 * A bare `ws` client speaking y-websocket by hand. Records every frame it receives, decoded,
 * and every frame that failed to decode as exactly one message.
 */
export class RawClient {
  constructor (ws, url) {
    this.ws = ws
    this.url = url
    /** @type {Array<ReturnType<typeof decodeFrame>>} */
    this.messages = []
    /** @type {string[]} frames that were not exactly one y-websocket message */
    this.frameErrors = []
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
    })
    this._listeners = new Set()
    ws.on('message', (data, isBinary) => {
      if (!isBinary) {
        this.frameErrors.push(`text frame received: ${describe(data.toString())}`)
      } else {
        const bytes = new Uint8Array(Buffer.isBuffer(data) ? data : Buffer.concat(data))
        try {
          this.messages.push(decodeFrame(bytes))
        } catch (err) {
          this.frameErrors.push(`${err.message} (frame hex ${Buffer.from(bytes).toString('hex').slice(0, 80)})`)
        }
      }
      for (const listener of this._listeners) listener()
    })
    ws.on('close', () => { for (const listener of this._listeners) listener() })
  }

  static async open (url) {
    const ws = new WebSocket(url)
    const client = new RawClient(ws, url)
    await withTimeout(new Promise((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
    }), `raw WebSocket to ${url} to open`)
    ws.on('error', () => {}) // a reset after open shows up as 'close'
    return client
  }

  send (bytes) {
    this.ws.send(bytes)
  }

  /**
   * Resolves with the first message at index >= `from` matching `predicate`. Rejects early if a
   * frame failed to decode as exactly one message.
   */
  waitMessage (what, predicate, { from = 0, timeoutMs = EVENT_TIMEOUT_MS } = {}) {
    return waitUntil(`${what} on ${this.url}`, () => {
      if (this.frameErrors.length > 0) throw new Error(`bad frame: ${this.frameErrors[0]}`)
      return this.messages.slice(from).find(predicate)
    }, (poll) => {
      this._listeners.add(poll)
      return () => this._listeners.delete(poll)
    }, timeoutMs)
  }

  close () {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws.terminate()
    }
  }
}

// ---------------------------------------------------------------------------
// The server under test

function relayCommand () {
  if (IS_REFERENCE) {
    return { bin: process.execPath, prefix: [path.join(here, 'fixtures', 'reference-server.js')] }
  }
  const bin = process.env.AETHERFLOW_BIN || path.join(REPO_ROOT, 'target', 'debug', 'aetherflow')
  if (!existsSync(bin)) {
    throw new Error(`relay binary not found at ${bin}: run \`cargo build -p aetherflow-server\` ` +
      'at the repo root, set AETHERFLOW_BIN, or set INTEROP_SERVER=reference')
  }
  return { bin, prefix: [] }
}

/** A running relay process (or the reference server standing in for it). */
export class Relay {
  constructor (child, dataDir, label) {
    this.child = child
    this.dataDir = dataDir
    this.label = label
    this.stderr = ''
    this.stdout = ''
    this.scheme = 'http'
    /** @type {Promise<{code: number|null, signal: string|null}>} */
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        liveChildren.delete(child)
        resolve({ code, signal })
      })
    })
    this.exitStatus = null
    this.exited.then((status) => { this.exitStatus = status })
    child.stderr.on('data', (chunk) => { this.stderr += chunk })
  }

  /** Whether the relay terminates TLS itself (started with --tls-cert). */
  get tls () { return this.scheme === 'https' }
  get httpUrl () { return `${this.scheme}://127.0.0.1:${this.port}` }
  /** Base URL for WebsocketProvider: the provider appends `/<room>`. */
  get wsBase () { return `${this.tls ? 'wss' : 'ws'}://127.0.0.1:${this.port}/ws` }
  wsUrl (room) { return `${this.wsBase}/${room}` }

  /** Sends `signal` and waits for the process to exit. */
  async kill (signal = 'SIGKILL') {
    if (this.exitStatus === null) this.child.kill(signal)
    return withTimeout(this.exited, `${this.label} to exit after ${signal}`, EXIT_TIMEOUT_MS)
  }

  logs () {
    return `----- ${this.label} (${this.dataDir}) stdout -----\n${this.stdout}` +
      `----- ${this.label} stderr -----\n${this.stderr}----- end ${this.label} -----`
  }
}

async function startRelay ({ dataDir, args = [], label }) {
  const { bin, prefix } = relayCommand()
  const argv = [...prefix, '--http-addr', '127.0.0.1:0', '--data-dir', dataDir, ...args]
  const child = spawn(bin, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_BACKTRACE: '1', ...process.env } })
  liveChildren.add(child)
  const relay = new Relay(child, dataDir, label)
  child.on('error', (err) => { relay.stderr += `spawn error: ${err.message}\n` })
  try {
    const port = await withTimeout(new Promise((resolve, reject) => {
      let buffered = ''
      child.stdout.on('data', (chunk) => {
        relay.stdout += chunk
        buffered += chunk
        const m = READY_LINE.exec(buffered)
        if (m) {
          relay.scheme = m[1]
          resolve(Number(m[3]))
        }
      })
      relay.exited.then(({ code, signal }) =>
        reject(new Error(`${label} exited (code ${code}, signal ${signal}) before printing its ready line`)))
    }), `${label} (${bin} ${argv.join(' ')}) to print its ready line`, READY_TIMEOUT_MS)
    relay.port = port
    return relay
  } catch (err) {
    child.kill('SIGKILL')
    err.message += `\n${relay.logs()}`
    throw err
  }
}

// ---------------------------------------------------------------------------
// Per-test environment with cleanup

/** Everything one test started; `cleanup()` undoes it all, whatever state the test left. */
export class Env {
  constructor (name) {
    this.name = name
    /** @type {Relay[]} */
    this.relays = []
    this.providers = []
    this.rawClients = []
    this.children = []
    this.dirs = []
    this.relayCount = 0
  }

  async tempDir () {
    const dir = await mkdtemp(path.join(tmpdir(), 'aetherflow-interop-'))
    this.dirs.push(dir)
    return dir
  }

  /** Starts a relay on a fresh data dir, or on `dataDir` to restart over existing data. */
  async startRelay ({ dataDir, args = [] } = {}) {
    const dir = dataDir ?? await this.tempDir()
    this.relayCount += 1
    const relay = await startRelay({ dataDir: dir, args, label: `${MODE} #${this.relayCount}` })
    this.relays.push(relay)
    return relay
  }

  /** A stock y-websocket provider on a fresh Y.Doc (or `doc`). */
  provider (relay, room, { doc = new Y.Doc(), ...opts } = {}) {
    const provider = new WebsocketProvider(relay.wsBase, room, doc, {
      WebSocketPolyfill: WebSocket,
      // Node 20 has a global BroadcastChannel: without this, providers in one process would
      // sync with each other directly instead of through the server under test.
      disableBc: true,
      ...opts
    })
    this.providers.push(provider)
    return { doc, provider, awareness: provider.awareness }
  }

  /** A provider that has finished its initial sync. */
  async syncedProvider (relay, room, opts) {
    const p = this.provider(relay, room, opts)
    await waitSynced(p.provider)
    return p
  }

  async rawClient (relay, room) {
    const client = await RawClient.open(relay.wsUrl(room))
    this.rawClients.push(client)
    return client
  }

  /** Runs a fixture script in a child node process; stdout is parsed as JSON lines. */
  spawnNode (script, args = []) {
    const child = spawn(process.execPath, [path.join(here, 'fixtures', script), ...args], {
      stdio: ['ignore', 'pipe', 'pipe']
    })
    liveChildren.add(child)
    child.on('exit', () => liveChildren.delete(child))
    this.children.push(child)
    child.lines = []
    child.stderrText = ''
    let buffered = ''
    child.stdout.on('data', (chunk) => {
      buffered += chunk
      let i
      while ((i = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, i)
        buffered = buffered.slice(i + 1)
        try { child.lines.push(JSON.parse(line)) } catch { child.lines.push({ text: line }) }
        child.emit('line')
      }
    })
    child.stderr.on('data', (chunk) => { child.stderrText += chunk })
    return child
  }

  destroyProviders () {
    for (const provider of this.providers) {
      try { provider.destroy() } catch {}
      try { provider.doc.destroy() } catch {}
    }
    this.providers = []
  }

  async cleanup () {
    this.destroyProviders()
    for (const client of this.rawClients) client.close()
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
    await Promise.all(this.relays.map((relay) => relay.kill('SIGKILL').catch(() => {})))
    await Promise.all(this.dirs.map((dir) => rm(dir, { recursive: true, force: true })))
  }

  printLogs () {
    for (const relay of this.relays) console.error(relay.logs())
    for (const child of this.children) {
      if (child.stderrText) console.error(`----- child ${child.spawnargs.join(' ')} stderr -----\n${child.stderrText}`)
    }
  }
}

/**
 * Declares a node:test test that gets a fresh Env, prints the server's logs if it fails, and
 * cleans up processes, clients and temp dirs whatever happens.
 *
 * @param {string} name
 * @param {{ needsPersistence?: boolean, needsTls?: boolean, needsHocuspocus?: boolean, timeout?: number }} options
 *   needsPersistence: the test restarts the server over its data dir; skipped in reference mode.
 *   needsTls: the test starts the relay with --tls-cert; skipped in reference mode.
 *   needsHocuspocus: the test uses the relay's /hocuspocus endpoint; skipped in reference mode.
 * @param {(env: Env, t: import('node:test').TestContext) => Promise<void>} fn
 */
export function interopTest (name, options, fn) {
  const skip = options.needsPersistence && IS_REFERENCE
    ? 'the reference server keeps no data across restarts'
    : options.needsTls && IS_REFERENCE
      ? 'the reference server does not terminate TLS'
      : options.needsHocuspocus && IS_REFERENCE
        ? 'the reference server does not speak the Hocuspocus protocol'
        : false
  test(name, { skip, timeout: options.timeout ?? 120_000 }, async (t) => {
    const env = new Env(name)
    try {
      await fn(env, t)
    } catch (err) {
      console.error(`\n##### ${name} failed in ${MODE} mode: ${err && err.message}`)
      env.printLogs()
      throw err
    } finally {
      await env.cleanup()
    }
  })
}

/** A unique room name per test, so nothing leaks between tests sharing a data dir. */
export function roomName (prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
}

/** Small seeded PRNG (mulberry32), so a failing random scenario can be replayed by its seed. */
export function seededRandom (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export { Y, WebSocket }
