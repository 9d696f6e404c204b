// The relay's version history API for one document (`/api/v1/docs/<name>/history...`, see the
// relay README's "Version history"), as the panel uses it. Every call resolves to the relay's
// JSON (or bytes) or throws a HistoryRefusal carrying the sentence to show.

import { authHeaders } from './token.js'
import { historyProblem } from './history-view.js'

/** A request the relay refused (or that never reached it), with what to tell the person. */
export class HistoryRefusal extends Error {
  /** @param {string} message @param {number} status 0 when the relay was not reached */
  constructor (message, status) {
    super(message)
    this.name = 'HistoryRefusal'
    this.status = status
  }
}

export class HistoryApi {
  /** @param {string} docName @param {string | null} token */
  constructor (docName, token) {
    this.base = `/api/v1/docs/${encodeURIComponent(docName)}`
    this.token = token
  }

  /** One page of versions, newest first: `{ versions, next_before }`. */
  list ({ limit = 20, before = null } = {}) {
    const query = new URLSearchParams({ limit: String(limit) })
    if (before !== null) query.set('before', String(before))
    return this.json(`/history?${query}`)
  }

  /** What changed from version `from` to version `to`: `{ roots: { name: change } }`. */
  diff (from, to) {
    return this.json(`/history/diff?from=${from}&to=${to}`)
  }

  /** Who wrote each part of every text at version `at`: `{ roots: { name: runs } }`. */
  blame (at) {
    return this.json(`/history/blame?at=${at}`)
  }

  /** The document at version `id` as one Yjs v1 update. */
  async update (id) {
    const response = await this.send(`/history/${id}/update`)
    return new Uint8Array(await response.arrayBuffer())
  }

  /** Restores version `id` as a new change: `{ restored, changed }`. */
  restore (id) {
    return this.json(`/history/${id}/restore`, { method: 'POST' })
  }

  /** Names version `id`. */
  setLabel (id, label) {
    return this.json(`/history/${id}/label`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ label })
    })
  }

  /** Removes version `id`'s name. */
  async removeLabel (id) {
    await this.send(`/history/${id}/label`, { method: 'DELETE' })
  }

  /** The document's event stream (Server-Sent Events; the token goes in the query). */
  events () {
    const query = this.token ? `?token=${encodeURIComponent(this.token)}` : ''
    return new EventSource(`${this.base}/events${query}`)
  }

  async json (path, init) {
    const response = await this.send(path, init)
    return response.json()
  }

  /** Sends a request; resolves to the response if it succeeded, else throws a HistoryRefusal. */
  async send (path, init = {}) {
    let response
    try {
      response = await fetch(this.base + path, {
        ...init,
        headers: { ...(init.headers ?? {}), ...authHeaders(this.token) }
      })
    } catch {
      throw new HistoryRefusal('The relay cannot be reached; try again once the connection is back.', 0)
    }
    if (response.ok) return response
    let body = null
    try { body = await response.json() } catch {}
    throw new HistoryRefusal(historyProblem(response.status, body), response.status)
  }
}
