// The AetherFlow browser demo: a CodeMirror 6 editor bound to a Yjs text through the stock
// y-websocket provider, talking to the relay that served this page (`/ws/<document>`).
//
// `window.aetherflowDemo` exposes the document, provider and editor for the browser tests and
// for poking around in the developer tools.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import { IndexeddbPersistence } from 'y-indexeddb'
import { removeAwarenessStates } from 'y-protocols/awareness'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { EditorState } from '@codemirror/state'
import { EditorView, keymap, placeholder, drawSelection, highlightActiveLine } from '@codemirror/view'
import { defaultKeymap } from '@codemirror/commands'

import { docNameFromSearch, docNameProblem, docHref } from './doc-name.js'
import { RelayMirror } from './relay-mirror.js'
import { loadIdentity, saveIdentity, awarenessUser, freeColor, freeName, readableColor } from './identity.js'
import { RateMeter, measureRoundTrip } from './live-stats.js'
import { startRegisterPanels } from './register-panels.js'
import { loadToken } from './token.js'
import { FRAGMENT_NAME, mountRichEditor, sampleUpdate } from './rich-editor.js'
import { HistoryPanel } from './history-panel.js'

/** The shared text's name in the Y.Doc (the README's example writes to the same one). */
const TEXT_NAME = 'content'
/** The document the first screen opens: it starts with a sample saying what to try. */
const WELCOME_DOC = 'welcome'
/** How often the live panel measures the round trip to the relay. */
const RTT_INTERVAL_MS = 3000

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id))

const { name: requested, problem } = docNameFromSearch(location.search)
const docName = problem ? docNameFromSearch('').name : requested
if (problem) {
  const notice = $('doc-notice')
  notice.textContent = `The address names a document the relay would refuse (${problem}) Showing “${docName}” instead.`
  notice.hidden = false
}
$('doc-name').textContent = docName
document.title = `${docName} · AetherFlow`
/**
 * `rich` (default): ProseMirror on the Y.XmlFragment `prosemirror`; `text` (`?mode=text`):
 * CodeMirror on the Y.Text `content`, which the README's SDK example writes. They are two
 * separate parts of one document.
 */
const mode = new URLSearchParams(location.search).get('mode') === 'text' ? 'text' : 'rich'
document.body.dataset.mode = mode
{
  const other = new URL(location.href)
  if (mode === 'text') other.searchParams.delete('mode')
  else other.searchParams.set('mode', 'text')
  const link = document.createElement('a')
  link.href = other.search
  link.textContent = mode === 'text' ? 'Switch to rich text' : 'Switch to plain text'
  $('mode-switch').append(mode === 'text'
    ? 'Plain text (the Y.Text “content”, what the SDK example writes). '
    : 'Rich text (a Y.XmlFragment). ', link)
}

// --- Yjs document, provider and editor ---------------------------------------------------

const doc = new Y.Doc()
const ytext = doc.getText(TEXT_NAME)
const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`
// y-websocket joins base and room name with '/' unencoded; the relay decodes the path.
/** The client token, when the relay runs with auth (`?token=JWT` once per tab). */
const token = loadToken(location.search, sessionStorage)
if (new URLSearchParams(location.search).has('token')) {
  // Kept for the tab; out of the address bar, so copying the link does not hand it out.
  const url = new URL(location.href)
  url.searchParams.delete('token')
  history.replaceState(null, '', url)
}
const provider = new WebsocketProvider(wsBase, encodeURIComponent(docName), doc, {
  connect: false,
  params: token ? { token } : {}
})
const mirror = new RelayMirror(doc, provider)

/**
 * The text kept in this browser (IndexedDB, one database per document and origin), so edits
 * made offline survive a reload or a browser restart and are sent when the relay is reachable.
 * Null when the browser offers no IndexedDB (some private modes): then nothing is kept.
 */
const persistence = openPersistence()
/** Whether the text is being kept in this browser (false once IndexedDB refused). */
let keptLocally = persistence !== null
if (!keptLocally) notKeptLocally()

function openPersistence () {
  if (typeof indexedDB === 'undefined') return null
  try {
    const p = new IndexeddbPersistence(`aetherflow-demo/${docName}`, doc)
    p._db.catch(() => { keptLocally = false; notKeptLocally(); renderStatus() })
    p.on('synced', scheduleStatus)
    return p
  } catch {
    return null
  }
}

/** Says so when this browser refuses to keep the text (IndexedDB unavailable). */
function notKeptLocally () {
  $('kept-hint').textContent = "Everyone with this page's address edits the same text. This browser does " +
    'not let the page keep a copy, so edits made offline are sent when the connection returns ' +
    'only if this page stays open.'
}
const awareness = provider.awareness

const identity = loadIdentity(localStorage)
/**
 * What this tab shows the others. Tabs of one browser share the saved identity; a tab that
 * finds an earlier one (another tab or another person) with its name or colour takes the next
 * free name ("Ada (2)") and palette colour, for this tab only.
 */
const tab = { name: identity.name, color: identity.color, joined: Date.now(), chosen: false }
function publishUser () {
  awareness.setLocalStateField('user', { ...awarenessUser(tab), joined: tab.joined })
}
publishUser()

const view = mode === 'text' ? mountTextEditor() : mountRich()

function mountRich () {
  $('toolbar').hidden = false
  const fragment = doc.getXmlFragment(FRAGMENT_NAME)
  // The first screen's sample, once the relay has answered: the same items for everyone, so
  // it never doubles and does not come back once deleted (see sampleUpdate).
  if (docName === WELCOME_DOC) {
    provider.once('sync', () => { if (fragment.length === 0) Y.applyUpdate(doc, sampleUpdate()) })
  }
  return mountRichEditor({
    parent: $('editor'),
    toolbar: $('toolbar'),
    linkForm: /** @type {HTMLFormElement} */ ($('link-form')),
    fragment,
    awareness,
    label: `Text of document ${docName}`
  })
}

function mountTextEditor () {
  return new EditorView({
    parent: $('editor'),
    state: EditorState.create({
      doc: ytext.toString(),
      extensions: [
        keymap.of([...yUndoManagerKeymap, ...defaultKeymap]),
        drawSelection(),
        highlightActiveLine(),
        EditorView.lineWrapping,
        placeholder('Start typing: everyone on this document sees it live.'),
        EditorView.contentAttributes.of({ 'aria-label': `Text of document ${docName}`, 'aria-multiline': 'true' }),
        yCollab(ytext, awareness)
      ]
    })
  })
}

// The skip link lands in the editable text itself, not on its wrapper.
$('skip-link').addEventListener('click', (event) => {
  event.preventDefault()
  view.focus()
})

// --- Connection indicator ------------------------------------------------------------------

/** @type {'connecting' | 'connected' | 'disconnected'} */
let socketStatus = 'connecting'
provider.on('status', ({ status }) => { socketStatus = status; scheduleStatus() })
provider.on('sync', scheduleStatus)
doc.on('update', scheduleStatus)

let statusQueued = false
function scheduleStatus () {
  if (statusQueued) return
  statusQueued = true
  setTimeout(() => { statusQueued = false; renderStatus() }, 50)
}

/**
 * One of: offline (no open socket: the network or relay is away and the provider retries by
 * itself, or the user chose to work offline), online (socket open, initial sync not done yet),
 * pending (synced, but local changes not yet sent back by the relay), synced (the relay has
 * everything this page has).
 */
function connectionState () {
  if (!provider.shouldConnect || socketStatus !== 'connected') return 'offline'
  if (!provider.synced) return 'online'
  return mirror.pending ? 'pending' : 'synced'
}

let everConnected = false
provider.on('status', ({ status }) => { if (status === 'connected') everConnected = true })

function statusText (state, pending) {
  switch (state) {
    case 'online': return 'Online: syncing…'
    case 'pending': return 'Online: saving changes…'
    case 'synced': return 'Synced: all changes saved'
  }
  const kept = !pending
    ? ''
    : keptLocally
      ? '; your changes are kept in this browser and sent on reconnect'
      : '; your changes are sent on reconnect if this page stays open'
  if (userOffline) return `Offline: working locally${kept}`
  if (networkDown) return `Offline: no network${kept}`
  return everConnected ? `Offline: reconnecting…${kept}` : 'Connecting…'
}

function renderStatus () {
  const state = connectionState()
  const pending = mirror.pending
  const el = $('status')
  el.dataset.state = state
  el.dataset.pending = String(pending)
  $('status-text').textContent = statusText(state, pending)
  const toggle = $('offline-toggle')
  toggle.setAttribute('aria-pressed', String(userOffline))
  toggle.textContent = userOffline ? 'Reconnect' : 'Work offline'
}

/** Whether the user chose to work offline (the button), as opposed to losing the network. */
let userOffline = false
/** Whether the browser reports no network (`navigator.onLine`). */
let networkDown = !navigator.onLine

$('offline-toggle').addEventListener('click', () => {
  userOffline = !userOffline
  applyConnectionWish()
})

// When the browser says the network is gone, a WebSocket may stay open for a long time without
// carrying anything (until TCP gives up or the provider's 30 s watchdog fires). Close it at once,
// so the indicator tells the truth and edits are kept as pending, and reconnect as soon as the
// browser reports the network back; y-websocket's own retries cover a relay that went away.
window.addEventListener('offline', () => { networkDown = true; applyConnectionWish() })
window.addEventListener('online', () => { networkDown = false; applyConnectionWish() })

/** Counts connection changes, so a round trip measured before one is not shown after it. */
let rttEpoch = 0

function applyConnectionWish () {
  const wanted = !userOffline && !networkDown
  if (wanted && !provider.shouldConnect) provider.connect()
  if (!wanted && provider.shouldConnect) provider.disconnect()
  registers.setOnline(wanted)
  // The last figure belongs to the connection that just ended: replace it now.
  rttEpoch++
  $('rtt').textContent = wanted ? '–' : 'offline'
  if (wanted) measureRtt()
  renderStatus()
}

// --- Title (lww) and publishing notes (manual) --------------------------------------------

const registers = startRegisterPanels(docName, () => identity.name, token)

// The provider reports no event while its socket stays down; re-render now and then so the
// indicator never lies for long.
setInterval(renderStatus, 1000)
applyConnectionWish()

// --- Version history ----------------------------------------------------------------------

const historyPanel = new HistoryPanel({ docName, token, doc, textName: TEXT_NAME, mode })

// --- Presence: you ------------------------------------------------------------------------

const nameInput = /** @type {HTMLInputElement} */ ($('user-name'))
const colorInput = /** @type {HTMLInputElement} */ ($('user-color'))
nameInput.value = identity.name
colorInput.value = identity.color

function updateIdentity () {
  identity.name = nameInput.value
  identity.color = colorInput.value
  saveIdentity(localStorage, identity)
  // What the person chose in this tab is what the others see (made readable if too light).
  Object.assign(tab, { name: identity.name, color: identity.color, chosen: true })
  publishUser()
}

/** Takes a free name and colour when an earlier tab or person already shows this tab's. */
function avoidLookalikes () {
  if (tab.chosen) return
  const mine = awareness.getLocalState()?.user
  if (!mine) return
  const others = [...awareness.getStates().entries()]
    .filter(([id, state]) => id !== doc.clientID && state.user && typeof state.user.name === 'string')
    .map(([id, state]) => ({ id, user: state.user }))
  const earlier = others.filter(({ id, user }) => {
    const joined = typeof user.joined === 'number' ? user.joined : 0
    return joined < tab.joined || (joined === tab.joined && id < doc.clientID)
  })
  let changed = false
  if (earlier.some(({ user }) => user.color === mine.color)) {
    tab.color = freeColor(others.map(({ user }) => String(user.color)).concat(mine.color))
    changed = true
  }
  if (earlier.some(({ user }) => user.name === mine.name)) {
    tab.name = freeName(mine.name, others.map(({ user }) => user.name))
    changed = true
  }
  if (changed) publishUser()
}
awareness.on('change', avoidLookalikes)
// y-websocket does not say goodbye when a browser tab closes; other tabs of this browser hear
// presence over BroadcastChannel and would keep showing this one until it times out.
window.addEventListener('pagehide', () => {
  removeAwarenessStates(awareness, [doc.clientID], 'page closed')
})
// Back from the browser's back-forward cache: present again.
window.addEventListener('pageshow', (event) => { if (event.persisted) publishUser() })
colorInput.addEventListener('change', () => { colorInput.value = readableColor(colorInput.value) })
nameInput.addEventListener('input', updateIdentity)
colorInput.addEventListener('input', updateIdentity)

// --- Open another document ----------------------------------------------------------------

const openForm = /** @type {HTMLFormElement} */ ($('open-form'))
const openName = /** @type {HTMLInputElement} */ ($('open-name'))
const openError = $('open-error')
openForm.addEventListener('submit', (event) => {
  event.preventDefault()
  const name = openName.value.trim()
  const why = docNameProblem(name)
  if (why) {
    openError.textContent = why
    openName.setAttribute('aria-invalid', 'true')
    openName.focus()
    return
  }
  location.assign(docHref(name) + (mode === 'text' ? '&mode=text' : ''))
})
openName.addEventListener('input', () => {
  openError.textContent = ''
  openName.removeAttribute('aria-invalid')
})

// --- Sharing ------------------------------------------------------------------------------

/** This document's address, without a token. */
const shareUrl = () => location.href
$('copy-link').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(shareUrl())
    $('share-status').textContent = 'Link copied.'
  } catch {
    $('share-status').textContent = `Copy this link: ${shareUrl()}`
  }
})
$('conflict-banner-link').addEventListener('click', (event) => {
  event.preventDefault()
  const first = /** @type {HTMLElement | null} */ (document.querySelector('#conflicts .conflict button'))
  first?.scrollIntoView({ block: 'center' })
  first?.focus()
})
$('open-window').addEventListener('click', () => {
  window.open(shareUrl(), '_blank', 'noopener')
})

// --- Live panel ---------------------------------------------------------------------------

function renderPeople () {
  const list = $('people')
  const entries = [...awareness.getStates().entries()]
    .filter(([, state]) => state.user)
    .sort(([a], [b]) => (a === doc.clientID ? -1 : b === doc.clientID ? 1 : a - b))
  renderAvatars(entries)
  list.replaceChildren(...entries.map(([clientId, state]) => {
    const li = document.createElement('li')
    li.dataset.clientId = String(clientId)
    const dot = document.createElement('span')
    dot.className = 'person-dot'
    dot.style.backgroundColor = state.user.color
    dot.setAttribute('aria-hidden', 'true')
    const name = document.createElement('span')
    name.className = 'person-name'
    name.textContent = state.user.name
    li.append(dot, name)
    if (clientId === doc.clientID) {
      const you = document.createElement('span')
      you.className = 'person-you'
      you.textContent = '(you)'
      li.append(' ', you)
    }
    return li
  }))
  $('people-count').textContent = String(entries.length)
}
/** The header's presence: one initial per person in their colour, always in view. */
function renderAvatars (entries) {
  $('avatars').replaceChildren(...entries.map(([clientId, state]) => {
    const li = document.createElement('li')
    li.className = 'avatar'
    const name = String(state.user.name)
    li.style.backgroundColor = readableColor(String(state.user.color))
    li.title = clientId === doc.clientID ? `${name} (you)` : name
    const initial = document.createElement('span')
    initial.setAttribute('aria-hidden', 'true')
    initial.textContent = [...name.trim()][0]?.toUpperCase() ?? '?'
    const full = document.createElement('span')
    full.className = 'sr-only'
    full.textContent = li.title
    li.append(initial, full)
    return li
  }))
}
awareness.on('change', renderPeople)
renderPeople()

const updates = new RateMeter(5000)
doc.on('update', () => updates.record(performance.now()))
setInterval(() => {
  $('update-rate').textContent = updates.perSecond(performance.now()).toFixed(1)
}, 500)

async function measureRtt () {
  // Offline (no network, or working offline by choice) there is nothing to measure, and a
  // request the browser knows will fail only adds a console error.
  if (networkDown || userOffline) {
    $('rtt').textContent = 'offline'
    return
  }
  const epoch = rttEpoch
  const ms = await measureRoundTrip('/healthz')
  if (epoch !== rttEpoch) return
  $('rtt').textContent = ms === null ? 'unreachable' : `${Math.max(1, Math.round(ms))} ms`
}
setInterval(measureRtt, RTT_INTERVAL_MS)

// --- Test and debugging hook --------------------------------------------------------------

Object.assign(window, {
  aetherflowDemo: { doc, ytext, fragment: doc.getXmlFragment(FRAGMENT_NAME), mode, provider, persistence, awareness, view, mirror, docName, connectionState, registers, historyPanel }
})
