// A register document (lww or manual) on the relay, kept live over its JSON WebSocket channel
// `/api/v1/docs/<name>/live` (see server/src/api/live.rs): the relay first sends the register's
// state, then every event of the document; a request (write, resolve) is answered by a result
// or an error carrying the request's id.
//
// The channel reconnects by itself with a growing delay, except after the document was deleted
// (close code 4410) or when the owner asked it to stay closed.

import { authHeaders } from './token.js'

const DELETED_CLOSE_CODE = 4410
const RETRY_MIN_MS = 500
const RETRY_MAX_MS = 8000

/**
 * Creates register document `name` of `kind` unless it exists (`PUT /api/v1/docs/<name>` is
 * idempotent). Resolves to null when the document is of that kind, or to a sentence saying why
 * it cannot be used.
 */
export async function ensureRegisterDoc (name, kind, token) {
  const response = await fetch(`/api/v1/docs/${encodeURIComponent(name)}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json', ...authHeaders(token) },
    body: JSON.stringify({ kind })
  })
  return response.ok ? null : await errorMessage(response)
}

async function errorMessage (response) {
  try {
    const body = await response.json()
    return body.error?.message || `the relay answered ${response.status}`
  } catch {
    return `the relay answered ${response.status}`
  }
}

export class RegisterChannel {
  /**
   * @param {string} name the register document
   * @param {string | null} token the client token, if the relay wants one
   * @param {{ onState: (state: object) => void, onEvent: (event: object) => void,
   *           onStatus: (connected: boolean) => void }} handlers
   */
  constructor (name, token, handlers) {
    this.name = name
    this.token = token
    this.handlers = handlers
    /** @type {WebSocket | null} */
    this.socket = null
    this.wanted = false
    this.connected = false
    this.retryMs = RETRY_MIN_MS
    this.retryTimer = 0
    this.nextId = 1
    /** @type {Map<number, { resolve: (v: object) => void, reject: (e: Error) => void }>} */
    this.waiting = new Map()
  }

  /** Opens the channel (and keeps it open) until `disconnect`. */
  connect () {
    this.wanted = true
    if (!this.socket) this.open()
  }

  /** Closes the channel and stops reconnecting. */
  disconnect () {
    this.wanted = false
    clearTimeout(this.retryTimer)
    this.socket?.close(1000, 'closed by the page')
  }

  open () {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws'
    const query = this.token ? `?token=${encodeURIComponent(this.token)}` : ''
    const socket = new WebSocket(`${scheme}://${location.host}/api/v1/docs/${encodeURIComponent(this.name)}/live${query}`)
    this.socket = socket
    socket.addEventListener('open', () => {
      this.retryMs = RETRY_MIN_MS
      this.setConnected(true)
    })
    socket.addEventListener('message', (message) => this.receive(message.data))
    socket.addEventListener('close', (event) => {
      this.socket = null
      this.setConnected(false)
      for (const { reject } of this.waiting.values()) reject(new Error('the connection to the relay closed'))
      this.waiting.clear()
      if (!this.wanted || event.code === DELETED_CLOSE_CODE) return
      this.retryTimer = setTimeout(() => { if (this.wanted && !this.socket) this.open() }, this.retryMs)
      this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS)
    })
  }

  setConnected (connected) {
    this.connected = connected
    this.handlers.onStatus(connected)
  }

  receive (text) {
    let frame
    try { frame = JSON.parse(text) } catch { return }
    if (frame.type === 'state') return this.handlers.onState(frame)
    if (frame.type === 'result' || frame.type === 'error') {
      const pending = this.waiting.get(frame.id)
      if (!pending) return
      this.waiting.delete(frame.id)
      if (frame.type === 'result') pending.resolve(frame.outcome)
      else pending.reject(Object.assign(new Error(frame.error?.message || 'refused'), { code: frame.error?.code }))
      return
    }
    this.handlers.onEvent(frame)
  }

  /** Fetches `path` on the relay with this channel's token. */
  fetch (path) {
    return fetch(path, { headers: authHeaders(this.token) })
  }

  /** Sends a request (without `id`); resolves to the relay's outcome or rejects with its error. */
  request (body) {
    const socket = this.socket
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error('not connected to the relay'))
    }
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      socket.send(JSON.stringify({ ...body, id }))
    })
  }
}
