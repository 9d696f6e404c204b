// The history panel under the editor: the document's versions newest first (paged), a
// read-only preview of the document at the version picked, with that version's changes marked
// by author, and, for write tokens, "Restore this version" and "Name this version".
//
// The list is reloaded when the panel opens, on "Refresh", and, while it is open, shortly
// after this page's document changes or the relay's event stream reports a committed change,
// a name or a restore. A restore goes through the relay, which applies it like any writer's
// change: the editor shows it through the ordinary sync.

import * as Y from 'yjs'
import { yXmlFragmentToProseMirrorRootNode } from 'y-prosemirror'
import { DOMSerializer } from 'prosemirror-model'

import { HistoryApi } from './history-api.js'
import { authorColors, labelProblem, runAuthors, runPieces, tokenCanWrite, versionRow } from './history-view.js'
import { FRAGMENT_NAME, schema } from './rich-editor.js'

/** Versions fetched per page ("Older versions" fetches the next one). */
const PAGE = 20
/** The relay's largest page, so a refresh can reload every page shown so far at once. */
const MAX_PAGE = 1000
/** How long the list waits after a change before it reloads, so typing does not flood it. */
const REFRESH_DELAY_MS = 600
/** The relay's events that change the list. */
const LIST_EVENTS = ['updated', 'version_labelled', 'version_restored']

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id))

/** Shows `text` in a status line, marked as an error or not. */
function say (el, text, isError = false) {
  el.textContent = text
  el.classList.toggle('error', isError)
}

/** Text for screen readers only, completing what the eye gets from the layout. */
function srOnly (text) {
  const span = document.createElement('span')
  span.className = 'sr-only'
  span.textContent = text
  return span
}

/**
 * @typedef {{ id: number, first_seq: number, time_ms: number, started_ms: number,
 *             authors: string[], bytes: number, entries: number, label: string | null }} Version
 */

export class HistoryPanel {
  /**
   * @param {{ docName: string, token: string | null, doc: Y.Doc, textName: string,
   *           mode: 'text' | 'rich' }} options
   *   `textName` is the Y.Text the plain-text editor shows; `mode` the editor on the page.
   */
  constructor ({ docName, token, doc, textName, mode }) {
    this.api = new HistoryApi(docName, token)
    this.doc = doc
    this.textName = textName
    this.mode = mode
    this.canWrite = tokenCanWrite(token)
    /** @type {Version[]} the versions shown, newest first */
    this.versions = []
    /** @type {number | null} the relay's `next_before` for the next older page */
    this.nextBefore = null
    /** @type {Version | null} the version previewed */
    this.selected = null
    /** @type {EventSource | null} */
    this.events = null
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.refreshTimer = null
    /** Counts list loads, so an answer that a newer load overtook is dropped. */
    this.loads = 0
    /** Counts previews, likewise. */
    this.previews = 0
    /** @type {Map<string, string>} each author's colour, kept while the page lives */
    this.colors = new Map()
    this.onDocUpdate = () => this.scheduleRefresh()
    this.wire()
  }

  get isOpen () { return !$('history-panel').hidden }

  wire () {
    $('history-toggle').addEventListener('click', () => (this.isOpen ? this.close() : this.open()))
    $('history-close').addEventListener('click', () => { this.close(); $('history-toggle').focus() })
    $('history-refresh').addEventListener('click', () => this.refresh())
    $('history-older').addEventListener('click', () => this.loadOlder())
    $('history-restore').addEventListener('click', () => this.restore())
    $('history-label-form').addEventListener('submit', (event) => { event.preventDefault(); this.nameVersion() })
    $('history-label-remove').addEventListener('click', () => this.removeName())
    $('history-readonly').hidden = this.canWrite
    $('history-restore').hidden = !this.canWrite
    $('history-label-form').hidden = !this.canWrite
  }

  /** Opens the panel and loads the newest versions. */
  open () {
    $('history-panel').hidden = false
    $('history-toggle').setAttribute('aria-expanded', 'true')
    this.doc.on('update', this.onDocUpdate)
    $('history-panel').scrollIntoView({ block: 'nearest' })
    this.refresh()
  }

  /** Closes the panel and stops following the relay's events. */
  close () {
    $('history-panel').hidden = true
    $('history-toggle').setAttribute('aria-expanded', 'false')
    this.doc.off('update', this.onDocUpdate)
    this.events?.close()
    this.events = null
    if (this.refreshTimer) clearTimeout(this.refreshTimer)
    this.refreshTimer = null
  }

  scheduleRefresh () {
    if (!this.isOpen || this.refreshTimer) return
    this.refreshTimer = setTimeout(() => { this.refreshTimer = null; this.refresh() }, REFRESH_DELAY_MS)
  }

  /** Follows the relay's events once the document is known to it (else the stream is a 404). */
  follow () {
    if (this.events || !this.isOpen) return
    this.events = this.api.events()
    for (const type of LIST_EVENTS) this.events.addEventListener(type, () => this.scheduleRefresh())
  }

  /** Reloads the list, as many versions as are shown (at least one page). */
  async refresh () {
    const load = ++this.loads
    const limit = Math.min(MAX_PAGE, Math.max(PAGE, this.versions.length))
    try {
      const page = await this.api.list({ limit })
      if (load !== this.loads) return
      this.versions = page.versions
      this.nextBefore = page.next_before
      this.problem(null)
      this.follow()
      this.renderList()
      this.keepSelection()
    } catch (err) {
      if (load !== this.loads) return
      if (err.status === 404) this.showEmpty()
      else this.problem(err.message)
    }
  }

  async loadOlder () {
    if (this.nextBefore === null) return
    const load = ++this.loads
    try {
      const page = await this.api.list({ limit: PAGE, before: this.nextBefore })
      if (load !== this.loads) return
      this.versions = this.versions.concat(page.versions)
      this.nextBefore = page.next_before
      this.problem(null)
      this.renderList()
      const first = /** @type {HTMLElement | null} */ (document.querySelector(`#history-list [data-version="${page.versions[0]?.id}"]`))
      first?.focus()
    } catch (err) {
      if (load === this.loads) this.problem(err.message)
    }
  }

  /** No version yet: the relay has stored nothing for this document. */
  showEmpty () {
    this.versions = []
    this.nextBefore = null
    this.problem(null)
    this.renderList()
  }

  /** Shows why the history cannot be shown (null: clears it). */
  problem (message) {
    const el = $('history-problem')
    el.textContent = message ?? ''
    el.hidden = message === null
  }

  /**
   * After a reload the previewed version may have grown (the newest version's id moves while
   * its authors type): it is the one with the same first change. Its preview is redrawn.
   */
  keepSelection () {
    if (!this.selected) return
    const same = this.versions.find((v) => v.first_seq === this.selected?.first_seq)
    if (!same) return
    const changed = same.id !== this.selected.id || same.label !== this.selected.label
    this.selected = same
    this.markSelected()
    if (changed) this.select(same, false)
  }

  renderList () {
    // A reload replaces the rows: the row that had the keyboard focus gets it back.
    const focused = /** @type {HTMLElement | null} */ (document.activeElement)?.closest?.('#history-list .history-version')
    const focusedFirst = Number(focused?.getAttribute('data-first'))
    const now = Date.now()
    // Oldest first, so an author's colour does not change when a newer version is listed.
    const colors = authorColors(this.versions.flatMap((v) => v.authors).reverse(), this.colors)
    $('history-list').replaceChildren(...this.versions.map((version) => this.row(version, now, colors)))
    $('history-older').hidden = this.nextBefore === null
    const count = this.versions.length
    say($('history-status'), count === 0
      ? 'No versions yet: nothing of this document has been saved on the relay.'
      : `${count} version${count === 1 ? '' : 's'} shown${this.nextBefore === null ? '' : '; older ones below'}.`)
    this.markSelected()
    if (focused) this.focusRow(focusedFirst)
  }

  /** Focuses the row of the version that starts at `firstSeq`, if listed. */
  focusRow (firstSeq) {
    const version = this.versions.find((v) => v.first_seq === firstSeq)
    if (!version) return
    const row = /** @type {HTMLElement | null} */ (document.querySelector(`#history-list [data-version="${version.id}"]`))
    row?.focus()
  }

  /** One version's row: a button that previews it. */
  row (version, now, colors) {
    const { when, authors, size, label, summary } = versionRow(version, now)
    const li = document.createElement('li')
    const button = document.createElement('button')
    button.type = 'button'
    button.className = 'history-version'
    button.dataset.version = String(version.id)
    button.dataset.first = String(version.first_seq)
    button.title = summary
    const top = document.createElement('span')
    top.className = 'history-when'
    top.append(srOnly(`Version ${version.id}: `), when)
    const who = document.createElement('span')
    who.className = 'history-authors'
    who.append(srOnly('by '))
    for (const name of version.authors) {
      const dot = document.createElement('span')
      dot.className = 'history-dot'
      dot.style.backgroundColor = colors.get(name) ?? ''
      dot.setAttribute('aria-hidden', 'true')
      who.append(dot)
    }
    const names = document.createElement('span')
    names.className = 'history-names'
    names.textContent = authors
    who.append(names)
    const meta = document.createElement('span')
    meta.className = 'history-size'
    meta.textContent = size
    button.append(top, who, meta)
    if (label) {
      const badge = document.createElement('span')
      badge.className = 'history-label'
      badge.textContent = label
      button.append(srOnly('named '), badge)
    }
    button.addEventListener('click', () => this.select(version))
    li.append(button)
    return li
  }

  markSelected () {
    for (const button of document.querySelectorAll('#history-list .history-version')) {
      const on = this.selected !== null && button.getAttribute('data-version') === String(this.selected.id)
      if (on) button.setAttribute('aria-current', 'true')
      else button.removeAttribute('aria-current')
    }
  }

  /**
   * Previews `version`: the document then, with its changes marked by author. `picked`: the
   * person chose it (the name field and the last action's outcome are reset), rather than a
   * reload redrawing it.
   */
  async select (version, picked = true) {
    const preview = ++this.previews
    this.selected = version
    this.markSelected()
    $('history-preview').hidden = false
    const { when, authors } = versionRow(version, Date.now())
    $('history-preview-heading').textContent = `Version ${version.id}${version.label ? ` “${version.label}”` : ''}: ${when} by ${authors}`
    $('history-label-remove').hidden = !version.label
    if (picked) {
      /** @type {HTMLInputElement} */ ($('history-label-input')).value = version.label ?? ''
      say($('history-action-status'), '')
    }
    try {
      const drawn = this.mode === 'rich' ? await this.richPreview(version) : await this.textPreview(version)
      if (preview !== this.previews) return
      drawn()
    } catch (err) {
      if (preview !== this.previews) return
      $('history-text').replaceChildren()
      $('history-legend').replaceChildren()
      say($('history-preview-note'), err.message, true)
    }
  }

  /** The version just before `version`, or null when it is the first. */
  async previousOf (version) {
    const index = this.versions.findIndex((v) => v.id === version.id)
    if (index >= 0 && index + 1 < this.versions.length) return this.versions[index + 1]
    const page = await this.api.list({ limit: 1, before: version.first_seq })
    return page.versions[0] ?? null
  }

  /**
   * The plain text at `version` with its changes (the diff from the version before; for the
   * first version, everything it wrote) marked by author. Resolves to a function that draws it.
   */
  async textPreview (version) {
    const previous = await this.previousOf(version)
    const runs = previous
      ? (await this.api.diff(previous.id, version.id)).roots[this.textName]?.runs
      : (await this.api.blame(version.id)).roots[this.textName]
    if (runs) {
      return () => this.drawRuns(runs, 'Underlined: written in this version. Struck through: deleted in it.')
    }
    // The text did not change in this version (or is empty): show it as it stood.
    const text = (await this.docAt(version)).getText(this.textName).toString()
    const kept = [{ kind: 'kept', text, by: [] }]
    return () => this.drawRuns(kept, 'This version did not change the plain text.')
  }

  /** The rich text at `version`, read-only; its authors in the legend. */
  async richPreview (version) {
    const fragment = (await this.docAt(version)).getXmlFragment(FRAGMENT_NAME)
    const node = yXmlFragmentToProseMirrorRootNode(fragment, schema)
    const dom = DOMSerializer.fromSchema(schema).serializeFragment(node.content)
    return () => {
      $('history-text').replaceChildren(dom)
      $('history-text').classList.add('rich')
      this.drawLegend(version.authors, authorColors(version.authors, this.colors))
      say($('history-preview-note'), 'The rich text at this version. Changes are marked letter by letter in plain-text mode.')
    }
  }

  /** The document at `version`, rebuilt from the relay's update. */
  async docAt (version) {
    const doc = new Y.Doc()
    Y.applyUpdate(doc, await this.api.update(version.id))
    return doc
  }

  /** Draws text runs: kept plain, inserted and deleted in their author's colour. */
  drawRuns (runs, note) {
    const authors = runAuthors(runs)
    const colors = authorColors(authors, this.colors)
    const pieces = runPieces(runs, colors).map((piece) => {
      const el = document.createElement(piece.tag)
      el.textContent = piece.text
      if (piece.author !== null) {
        el.dataset.author = piece.author
        el.style.setProperty('--author', piece.color)
        el.title = `${piece.tag === 'del' ? 'Deleted' : 'Written'} by ${piece.author}`
      }
      return el
    })
    $('history-text').replaceChildren(...pieces)
    $('history-text').classList.remove('rich')
    this.drawLegend(authors, colors)
    say($('history-preview-note'), note)
  }

  drawLegend (names, colors) {
    $('history-legend').replaceChildren(...names.map((name) => {
      const li = document.createElement('li')
      const swatch = document.createElement('span')
      swatch.className = 'history-dot'
      swatch.style.backgroundColor = colors.get(name) ?? ''
      swatch.setAttribute('aria-hidden', 'true')
      li.append(swatch, name)
      return li
    }))
  }

  async restore () {
    const version = this.selected
    if (!version) return
    const status = $('history-action-status')
    say(status, `Restoring version ${version.id}…`)
    try {
      const { changed } = await this.api.restore(version.id)
      say(status, changed
        ? `Restored version ${version.id} for everyone; the editor shows it.`
        : `The document already matches version ${version.id}; nothing changed.`)
      this.refresh()
    } catch (err) {
      say(status, `Not restored: ${err.message}`, true)
    }
  }

  async nameVersion () {
    const version = this.selected
    if (!version) return
    const input = /** @type {HTMLInputElement} */ ($('history-label-input'))
    const status = $('history-action-status')
    const why = labelProblem(input.value)
    if (why) {
      say(status, why, true)
      input.focus()
      return
    }
    try {
      const { label } = await this.api.setLabel(version.id, input.value.trim())
      say(status, `Version ${version.id} is named “${label}”.`)
      this.refresh()
    } catch (err) {
      say(status, `Not named: ${err.message}`, true)
    }
  }

  async removeName () {
    const version = this.selected
    if (!version) return
    const status = $('history-action-status')
    try {
      await this.api.removeLabel(version.id)
      say(status, `Version ${version.id} has no name any more.`)
      this.refresh()
    } catch (err) {
      say(status, `Name not removed: ${err.message}`, true)
    }
  }
}
