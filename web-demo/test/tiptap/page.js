// The Tiptap test page (bundled by test/tiptap/serve.js, never part of the demo's dist/): what a
// Tiptap app does, with stock packages only. The address says what to open:
//
//   ?relay=http://127.0.0.1:PORT   the relay (its /hocuspocus and /ws/{doc} endpoints)
//   &docs=a,b                      one Tiptap editor per document, all over ONE
//                                  HocuspocusProviderWebsocket
//   &token=JWT&name=Ada&color=#…   the provider's token and the caret's name and colour
//   &client=y-websocket            instead: a plain y-websocket client of the first document,
//                                  showing its Y.XmlFragment `default` (Tiptap's field)
//
// Each editor's status line shows the provider's state: socket status, first sync, the
// authentication outcome (`authenticated`, `read-only`, `refused`) and how many local changes the
// relay has not acknowledged as saved. The editor stays editable under a read-only token on
// purpose: the relay, not the page, has to keep such edits out. `window.tiptapTest` exposes the
// objects the test reads.

import { Editor } from '@tiptap/core'
import StarterKit from '@tiptap/starter-kit'
import Collaboration from '@tiptap/extension-collaboration'
import CollaborationCaret from '@tiptap/extension-collaboration-caret'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import * as Y from 'yjs'

/** Hocuspocus's message type for the sync-status acknowledgement. */
const SYNC_STATUS = 8

const params = new URLSearchParams(location.search)
const relay = new URL(params.get('relay'))
relay.protocol = relay.protocol === 'https:' ? 'wss:' : 'ws:'
const docs = (params.get('docs') || 'tiptap').split(',')
const token = params.get('token') || undefined
const user = { name: params.get('name') || 'Anonymous', color: params.get('color') || '#1b5e9e' }

const main = document.querySelector('main')

/** A section with a heading, a status line and a mount point for one document. */
function section (name) {
  const el = document.createElement('section')
  el.dataset.doc = name
  const heading = document.createElement('h2')
  heading.textContent = `Document ${name}`
  const status = document.createElement('p')
  status.className = 'status'
  status.setAttribute('role', 'status')
  const mount = document.createElement('div')
  mount.className = 'mount'
  el.append(heading, status, mount)
  main.append(el)
  return { status, mount }
}

/**
 * Counts, from the relay's own messages, the sync-status acknowledgements for this provider:
 * `acknowledged` (applied and saved) and `refused` (not applied, e.g. under a read token).
 */
function countAcknowledgements (provider, counts) {
  provider.on('message', ({ event }) => {
    const decoder = decoding.createDecoder(new Uint8Array(event.data))
    decoding.readVarString(decoder)
    if (decoding.readVarUint(decoder) !== SYNC_STATUS) return
    if (decoding.readVarInt(decoder) === 1) counts.acknowledged++
    else counts.refused++
  })
}

/** One Tiptap editor on document `name` over the shared provider socket. */
function openDocument (socket, name) {
  const { status, mount } = section(name)
  const ydoc = new Y.Doc()
  const provider = new HocuspocusProvider({ websocketProvider: socket, name, document: ydoc, token })
  const state = { socket: 'connecting', auth: 'pending', acknowledged: 0, refused: 0, localUpdates: 0 }
  countAcknowledgements(provider, state)
  ydoc.on('update', (_update, origin) => { if (origin !== provider) state.localUpdates++ })
  provider.on('status', ({ status }) => { state.socket = status })
  provider.on('authenticated', ({ scope }) => { state.auth = scope === 'readonly' ? 'read-only' : 'authenticated' })
  provider.on('authenticationFailed', () => { state.auth = 'refused' })
  const editor = new Editor({
    element: mount,
    extensions: [
      // Collaboration brings its own undo. No trailing empty paragraph: each editor would add
      // its own at once, so the document's end would depend on timing.
      StarterKit.configure({ undoRedo: false, trailingNode: false }),
      Collaboration.configure({ document: ydoc }),
      CollaborationCaret.configure({ provider, user })
    ],
    editorProps: { attributes: { 'aria-label': `Text of ${name}`, role: 'textbox', 'aria-multiline': 'true' } }
  })
  const render = () => {
    const auth = { pending: 'authenticating', authenticated: 'authenticated', 'read-only': 'read-only', refused: 'access refused' }[state.auth]
    const unsaved = provider.unsyncedChanges
    status.dataset.socket = state.socket
    status.dataset.synced = String(provider.synced)
    status.dataset.auth = state.auth
    status.dataset.unsaved = String(unsaved)
    status.textContent = `${state.socket} · ${provider.synced ? 'synced' : 'not synced'} · ${auth} · ` +
      (unsaved ? `${unsaved} change${unsaved === 1 ? '' : 's'} not saved` : 'all saved')
  }
  for (const event of ['status', 'synced', 'authenticated', 'authenticationFailed', 'unsyncedChanges', 'message']) {
    provider.on(event, render)
  }
  render()
  provider.attach()
  return { editor, provider, ydoc, state }
}

/** A plain y-websocket client of `name`, showing Tiptap's XmlFragment as XML. */
function openYWebsocket (name) {
  const { status, mount } = section(name)
  const ydoc = new Y.Doc()
  const provider = new WebsocketProvider(`${relay.origin}/ws`, name, ydoc, { params: token ? { token } : {} })
  const fragment = ydoc.getXmlFragment('default')
  const pre = document.createElement('pre')
  mount.append(pre)
  const render = () => {
    status.dataset.synced = String(provider.synced)
    status.textContent = `y-websocket · ${provider.synced ? 'synced' : 'not synced'}`
    pre.textContent = fragment.toString()
  }
  provider.on('sync', render)
  ydoc.on('update', render)
  render()
  return { provider, ydoc, fragment }
}

if (params.get('client') === 'y-websocket') {
  document.title = `y-websocket: ${docs[0]}`
  window.tiptapTest = { Y, ...openYWebsocket(docs[0]) }
} else {
  document.title = `Tiptap: ${docs.join(', ')}`
  const socket = new HocuspocusProviderWebsocket({ url: `${relay.origin}/hocuspocus` })
  const open = {}
  for (const name of docs) open[name] = openDocument(socket, name)
  window.tiptapTest = { Y, socket, docs: open }
}
