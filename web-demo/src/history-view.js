// The history panel's pure rules: how a version is described, which colour each author gets,
// how the relay's diff runs become highlighted pieces of text, what a refusal means to the
// person, and whether the page's token may restore and name versions. No DOM, no fetch: the
// panel (history-panel.js) draws what these return, and test/unit.test.js checks them in Node.

import { PALETTE, readableColor } from './identity.js'

/** The name the relay gives changes whose author it does not know. */
export const ANONYMOUS = 'anonymous'

/**
 * A size for people: `512 B`, `1.5 KB`, `2.0 MB` (powers of 1024).
 *
 * @param {number} bytes
 */
export function formatBytes (bytes) {
  if (bytes < 1024) return `${bytes} B`
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`
}

/**
 * When a version was made, relative to `nowMs` while recent (`just now`, `5 min ago`), else as
 * the date and time in the reader's locale.
 *
 * @param {number} timeMs  milliseconds since the epoch
 * @param {number} nowMs
 */
export function formatWhen (timeMs, nowMs) {
  const ago = Math.max(0, nowMs - timeMs)
  if (ago < 60_000) return 'just now'
  if (ago < 3_600_000) return `${Math.floor(ago / 60_000)} min ago`
  return new Date(timeMs).toLocaleString()
}

/**
 * What a version's row in the list says.
 *
 * @param {{ id: number, time_ms: number, authors: string[], bytes: number, entries: number,
 *           label: string | null }} version  one of the relay's `versions`
 * @param {number} nowMs
 * @returns {{ when: string, authors: string, size: string, label: string | null, summary: string }}
 *   `summary` is the whole row as one sentence (the row's tooltip).
 */
export function versionRow (version, nowMs) {
  const when = formatWhen(version.time_ms, nowMs)
  const authors = version.authors.join(', ')
  const changes = version.entries === 1 ? '1 change' : `${version.entries} changes`
  const size = `${changes}, ${formatBytes(version.bytes)}`
  const label = version.label ?? null
  const named = label ? `“${label}”, ` : ''
  return { when, authors, size, label, summary: `Version ${version.id}, ${named}${when} by ${authors}, ${size}` }
}

/**
 * One colour per author, the same for a name wherever it appears in the panel: the palette in
 * the order the names first appear, each darkened if needed to stay readable. Names already in
 * `colors` keep theirs; new ones are added to it.
 *
 * @param {Iterable<string>} names
 * @param {Map<string, string>} [colors]  the colours given so far
 * @returns {Map<string, string>} `colors`
 */
export function authorColors (names, colors = new Map()) {
  for (const name of names) {
    if (!colors.has(name)) colors.set(name, readableColor(PALETTE[colors.size % PALETTE.length]))
  }
  return colors
}

/**
 * The relay's text runs (`{kind: 'kept' | 'inserted' | 'deleted', text, by}`) as pieces to
 * draw: `ins` and `del` carry who wrote or deleted them (their names joined, or `anonymous`
 * when the relay does not know, as its version list says) and that author's colour; `kept`
 * text is drawn plain.
 *
 * @param {{ kind: string, text: string, by: string[] }[]} runs
 * @param {Map<string, string>} colors  from {@link authorColors}
 * @returns {{ tag: 'span' | 'ins' | 'del', text: string, author: string | null, color: string | null }[]}
 */
export function runPieces (runs, colors) {
  return runs.filter((run) => run.text !== '').map((run) => {
    if (run.kind === 'kept') return { tag: 'span', text: run.text, author: null, color: null }
    const author = run.by.length ? run.by.join(', ') : ANONYMOUS
    const color = colors.get(run.by[0] ?? ANONYMOUS) ?? '#5b6575'
    return { tag: run.kind === 'deleted' ? 'del' : 'ins', text: run.text, author, color }
  })
}

/**
 * Everyone the runs credit, in order of appearance (for the legend and {@link authorColors}).
 *
 * @param {{ kind: string, by: string[] }[]} runs
 */
export function runAuthors (runs) {
  const changed = runs.filter((run) => run.kind !== 'kept' && run.text !== '')
  return [...new Set(changed.flatMap((run) => (run.by.length ? run.by : [ANONYMOUS])))]
}

/**
 * What the panel says when the relay refuses a history request.
 *
 * @param {number} status  the HTTP status
 * @param {{ error?: { code?: string, message?: string } } | null} body  the relay's JSON error, if any
 */
export function historyProblem (status, body) {
  const code = body?.error?.code
  const message = body?.error?.message
  if (status === 501 || code === 'not_in_cluster_mode') {
    return 'Version history is not available on this relay.'
  }
  if (status === 401) return 'The relay did not accept this page’s token; open the page with a fresh one.'
  if (status === 403) return 'Your token does not allow this on this document.'
  if (status === 404 && !message) return 'This document or version does not exist (any more).'
  if (status === 429 || status === 503) return 'The relay is busy; try again in a moment.'
  return message ? `The relay refused: ${message}` : `The relay answered ${status}.`
}

/**
 * Whether `token` lets the page restore and name versions: no token (an open relay), or a token
 * whose `perm` claim is `write`. Read-only tokens browse. The relay decides in the end; this
 * only keeps buttons that would be refused out of sight.
 *
 * @param {string | null} token
 */
export function tokenCanWrite (token) {
  if (!token) return true
  const payload = token.split('.')[1]
  if (!payload) return false
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/')
    const json = new TextDecoder().decode(Uint8Array.from(atob(base64), (c) => c.charCodeAt(0)))
    return JSON.parse(json).perm === 'write'
  } catch {
    return false
  }
}

/**
 * Why a version name cannot be sent, or null: only an empty name is caught here. The relay
 * owns the rest of the rule (at most 200 bytes, no control characters) and its refusal is
 * shown as it words it.
 *
 * @param {string} label
 */
export function labelProblem (label) {
  return label.trim() === '' ? 'Enter a name for the version.' : null
}
