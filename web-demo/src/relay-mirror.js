// "Pending changes": local edits the relay has not yet sent back.
//
// The relay echoes every update to every connection of the document, its sender included, and
// answers a (re)connection's sync step 1 with what it holds. So everything the relay has
// confirmed reaches this page as a sync step 2 or update message from the WebSocket. The mirror
// applies exactly those messages to a second Y.Doc, the relay's state as this page has seen it;
// a local change is pending while the editor's document holds something the mirror does not.
// Comparing snapshots (state vector plus delete set) counts deletions too, which a state vector
// alone would miss.
//
// Content can reach the page before the relay says it has it: y-websocket delivers another
// tab's document over its BroadcastChannel, and y-indexeddb loads what this browser kept. The
// relay then answers the provider's sync step 1 with only what the page lacks, and the mirror
// would never learn that the relay holds the rest. So on every connection the mirror asks the
// relay itself, with a sync step 1 carrying the mirror's own state vector; the relay's answer
// (a sync step 2 over the socket) brings the mirror up to the relay's full state.

import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'

const MESSAGE_SYNC = 0
const SYNC_STEP2 = 1
const SYNC_UPDATE = 2

export class RelayMirror {
  /**
   * Install before `provider.connect()`, so no message from the relay is missed.
   *
   * @param {Y.Doc} doc  the provider's document
   * @param {import('y-websocket').WebsocketProvider} provider
   */
  constructor (doc, provider) {
    this.doc = doc
    /** What the relay has sent this page: its confirmed view of the document. */
    this.confirmed = new Y.Doc({ gc: doc.gc })
    const handleSync = provider.messageHandlers[MESSAGE_SYNC]
    provider.messageHandlers[MESSAGE_SYNC] = (encoder, decoder, p, fromSocket, type) => {
      // `fromSocket` is false for messages from other tabs (BroadcastChannel): those are not
      // the relay's word.
      if (fromSocket) this.#observe(decoding.clone(decoder))
      handleSync(encoder, decoder, p, fromSocket, type)
    }
    provider.on('status', ({ status }) => {
      if (status === 'connected') this.#askRelay(provider)
    })
  }

  /** Sends the relay a sync step 1 from the mirror's state: its answer is what the mirror lacks. */
  #askRelay (provider) {
    const ws = provider.ws
    if (!ws || ws.readyState !== WebSocket.OPEN) return
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, MESSAGE_SYNC)
    syncProtocol.writeSyncStep1(encoder, this.confirmed)
    ws.send(encoding.toUint8Array(encoder))
  }

  /** @param {decoding.Decoder} decoder  positioned after the message type */
  #observe (decoder) {
    const kind = decoding.readVarUint(decoder)
    if (kind === SYNC_STEP2 || kind === SYNC_UPDATE) {
      Y.applyUpdate(this.confirmed, decoding.readVarUint8Array(decoder), this)
    }
  }

  /** True while the document holds changes the relay has not sent back. */
  get pending () {
    return !Y.equalSnapshots(Y.snapshot(this.doc), Y.snapshot(this.confirmed))
  }

  destroy () {
    this.confirmed.destroy()
  }
}
