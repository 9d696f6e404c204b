// The two register panels beside the editor: the document's title, an `lww` document (the
// latest write wins everywhere), and its publishing notes, a `manual` document (a save based
// on an old version becomes a conflict that someone resolves by choosing or merging).
//
// Each panel lives on its own register document next to the Yjs text: `<doc>.title` and
// `<doc>.notes`, created on first use.

import { HybridClock, compareStamps } from './hlc.js'
import { RegisterChannel, ensureRegisterDoc } from './register-channel.js'
import { MAX_DOC_NAME_BYTES } from './doc-name.js'

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id))

/** The register documents that go with Yjs document `docName`, or null if a name is too long. */
export function companionNames (docName) {
  const names = { title: `${docName}.title`, notes: `${docName}.notes` }
  const fits = Object.values(names).every((n) => new TextEncoder().encode(n).length <= MAX_DOC_NAME_BYTES)
  return fits ? names : null
}

/** A random id for this tab, so two tabs of one person are distinct writers. */
function tabId () {
  return Math.random().toString(36).slice(2, 8)
}

/** Renders a JSON register value as text for an input. */
function asText (value) {
  if (value === null || value === undefined) return ''
  return typeof value === 'string' ? value : JSON.stringify(value)
}

/** Shows `text` in a status line, marked as an error or not. */
function say (el, text, isError = false) {
  el.textContent = text
  el.classList.toggle('error', isError)
}

export class TitlePanel {
  /**
   * @param {string} name the lww document @param {() => string} who the person's name
   * @param {string | null} token the client token, if any
   */
  constructor (name, who, token) {
    this.clock = new HybridClock()
    this.writer = `${who()}·${tabId()}`
    this.who = who
    /** @type {{ value: unknown, stamp: object } | null} the register as the relay last showed it */
    this.current = null
    this.input = /** @type {HTMLInputElement} */ ($('title-input'))
    this.status = $('title-status')
    this.channel = new RegisterChannel(name, token, {
      onState: ({ register }) => this.show(register),
      onEvent: (event) => { if (event.type === 'updated' && event.register) this.show(event.register) },
      onStatus: (connected) => { offlineForm('title-form', connected) }
    })
    /** Whether the person changed the title field since it was last set or shown. */
    this.dirty = false
    offlineForm('title-form', false)
    this.input.addEventListener('input', () => { this.dirty = true })
    $('title-form').addEventListener('submit', (event) => { event.preventDefault(); this.save() })
  }

  /** Shows the relay's register, unless a newer one is already shown. */
  show (register) {
    if (!register || register.kind !== 'lww') return
    if (register.stamp) {
      this.clock.observe(register.stamp.clock)
      if (this.current?.stamp && compareStamps(register.stamp, this.current.stamp) < 0) return
    }
    this.current = register
    // Someone typing a new title keeps their text until they set it.
    if (!this.dirty) this.input.value = asText(register.value)
    const by = register.stamp ? ` (set by ${register.stamp.writer.split('·')[0]})` : ''
    const value = asText(register.value)
    this.input.dataset.value = value
    if (register.value === null) say(this.status, 'No title yet.')
    else if (this.dirty && this.input.value !== value) {
      // The person's draft stays in the field; the title everyone sees is named here.
      say(this.status, `Current title${by}: “${value}”. Your draft is not set yet.`)
    } else say(this.status, `Current title${by}.`)
  }

  async save () {
    if (!this.channel.connected) {
      say(this.status, 'Offline: the title can be set once the connection is back. Your draft stays here.', true)
      return
    }
    const value = this.input.value.trim()
    this.dirty = false
    this.writer = `${this.who()}·${this.writer.split('·')[1]}`
    const stamp = { clock: this.clock.tick(Date.now()), writer: this.writer }
    try {
      const outcome = await this.channel.request({ op: 'write', value, stamp })
      if (outcome.outcome === 'stale') {
        say(this.status, 'Someone set a newer title at the same time; theirs is kept.', true)
      }
    } catch (err) {
      say(this.status, `Title not saved: ${err.message}`, true)
    }
  }
}

export class NotesPanel {
  /**
   * @param {string} name the manual document @param {() => string} who the person's name
   * @param {string | null} token the client token, if any
   */
  constructor (name, who, token) {
    this.name = name
    this.who = who
    /** Whether a token names the author: the relay then records its subject and refuses another name. */
    this.signed = Boolean(token)
    /** The version the text area is based on. */
    this.version = 0
    /** The relay's latest version. */
    this.latest = 0
    /** Conflicts made by this tab's saves. */
    this.mine = new Set()
    /** Whether the person changed the text since it was last loaded or saved. */
    this.dirty = false
    /** @type {Map<number, object>} open conflicts by id */
    this.conflicts = new Map()
    this.input = /** @type {HTMLTextAreaElement} */ ($('notes-input'))
    this.status = $('notes-status')
    this.channel = new RegisterChannel(name, token, {
      onState: ({ register }) => { this.show(register, true); this.loadConflicts() },
      onEvent: (event) => this.onEvent(event),
      onStatus: (connected) => { offlineForm('notes-form', connected) }
    })
    offlineForm('notes-form', false)
    this.input.addEventListener('input', () => { this.dirty = true })
    $('notes-form').addEventListener('submit', (event) => { event.preventDefault(); this.save() })
  }

  onEvent (event) {
    if (event.type === 'conflict_detected') {
      this.conflicts.set(event.conflict.id, event.conflict)
      this.renderConflicts()
    }
    if (event.type === 'conflict_resolved') {
      // A conflict this tab's save made holds its text; once resolved, show the outcome.
      if (this.mine.delete(event.conflict)) this.dirty = false
      const wasOpen = this.conflicts.delete(event.conflict)
      this.renderConflicts()
      // "Choose below" with nothing below would be a dead end.
      if (wasOpen && this.conflicts.size === 0 && !this.resolving) say(this.status, 'The conflict was resolved; the notes show the outcome.')
    }
    if (event.type === 'updated' && event.register) this.show(event.register, false)
  }

  /**
   * Shows the relay's register. Unsaved typing is kept (unless `replace`), and so is the
   * version it is based on: saving it then makes a conflict instead of overwriting.
   */
  show (register, replace) {
    if (!register || register.kind !== 'manual') return
    this.latest = register.version
    if (replace || !this.dirty) {
      this.input.value = asText(register.value)
      this.version = register.version
      this.dirty = false
    } else if (register.version !== this.version && this.conflicts.size === 0) {
      say(this.status, 'Someone else saved new notes; saving yours now will ask to resolve a conflict.')
    }
    this.renderVersion()
  }

  renderVersion () {
    const behind = this.version !== this.latest ? ` (you are editing version ${this.version})` : ''
    $('notes-version').textContent = `Version ${this.latest}${behind}`
    this.input.dataset.version = String(this.version)
  }

  async loadConflicts () {
    const response = await this.channel.fetch(`/api/v1/docs/${encodeURIComponent(this.name)}/conflicts`)
    if (!response.ok) return
    const { conflicts } = await response.json()
    this.conflicts = new Map(conflicts.map((c) => [c.id, c]))
    this.renderConflicts()
  }

  async save () {
    if (!this.channel.connected) {
      say(this.status, 'Offline: notes can be saved once the connection is back. Your text stays here.', true)
      return
    }
    if (this.conflicts.size > 0) {
      // A second save would stack another conflict on the open one.
      say(this.status, 'A conflict is open: choose or merge below first, then save again if needed.', true)
      return
    }
    const value = this.input.value
    try {
      const outcome = await this.channel.request({ op: 'write', value, base_version: this.version, author: this.author() })
      if (outcome.outcome === 'conflict') {
        this.mine.add(outcome.conflict.id)
        say(this.status, 'Someone saved from the same version: choose below which notes to keep.', true)
      } else {
        // The text shown is what was saved, whichever event got here first.
        this.dirty = this.input.value !== value
        this.version = outcome.revision.version
        this.latest = Math.max(this.latest, this.version)
        this.renderVersion()
        say(this.status, 'Notes saved.')
      }
    } catch (err) {
      say(this.status, `Notes not saved: ${err.message}`, true)
    }
  }

  /** The `author` to send: the person's name on an open relay; none with a token, whose subject the relay records. */
  author () {
    return this.signed ? undefined : this.who()
  }

  async resolve (id, value) {
    // The resolution replaces whatever this tab was typing, as the person chose.
    this.dirty = false
    this.resolving = true
    try {
      await this.channel.request({ op: 'resolve', conflict: id, value, author: this.author() })
      say(this.status, 'Conflict resolved.')
    } catch (err) {
      say(this.status, `Not resolved: ${err.message}`, true)
    } finally {
      this.resolving = false
    }
  }

  renderConflicts () {
    const list = $('conflicts')
    const hadFocus = list.contains(document.activeElement)
    list.replaceChildren(...[...this.conflicts.values()].map((c) => this.conflictCard(c)))
    list.hidden = this.conflicts.size === 0
    // The banner at the top says a conflict waits, wherever the person is on the page.
    $('conflict-banner').hidden = this.conflicts.size === 0
    // The button pressed to resolve is gone with its card: keep keyboard users in the panel.
    if (hadFocus && !list.contains(document.activeElement)) this.input.focus()
  }

  /** One conflict: both values with their authors, and ways to end it. */
  conflictCard (conflict) {
    const card = document.createElement('section')
    card.className = 'conflict'
    card.dataset.conflictId = String(conflict.id)
    const heading = document.createElement('h3')
    heading.id = `conflict-${conflict.id}-heading`
    heading.textContent = `Conflict on version ${conflict.base_version}`
    card.setAttribute('aria-labelledby', heading.id)
    const current = asText(conflict.current.value)
    const proposed = asText(conflict.proposed.value)
    const merged = document.createElement('textarea')
    merged.id = `conflict-${conflict.id}-merged`
    merged.rows = 3
    merged.value = current === proposed ? current : `${current}\n${proposed}`
    const mergedLabel = document.createElement('label')
    mergedLabel.htmlFor = merged.id
    mergedLabel.textContent = 'Or merge them'
    card.append(
      heading,
      this.side('Saved', conflict.current.author, current, 'current', () => this.resolve(conflict.id, current)),
      this.side('Also saved', conflict.proposed.author, proposed, 'proposed', () => this.resolve(conflict.id, proposed)),
      mergedLabel, merged,
      button('Save merged notes', 'merged', () => this.resolve(conflict.id, merged.value))
    )
    return card
  }

  side (label, author, text, which, keep) {
    const box = document.createElement('div')
    box.className = 'conflict-side'
    box.dataset.side = which
    const title = document.createElement('p')
    title.className = 'conflict-author'
    title.textContent = `${label} by ${author || 'someone'}`
    const value = document.createElement('blockquote')
    value.className = 'conflict-value'
    value.textContent = text
    box.append(title, value, button(`Keep ${author || 'this'}’s notes`, `keep-${which}`, keep))
    return box
  }

  connect () { this.channel.connect() }
  disconnect () { this.channel.disconnect() }
}

/**
 * Marks a register form offline: its button is really disabled (and says why through
 * `aria-describedby`), the field keeps the person's text. Title and notes are not queued.
 */
function offlineForm (id, connected) {
  const form = $(id)
  form.toggleAttribute('data-offline', !connected)
  const submit = /** @type {HTMLButtonElement} */ (form.querySelector('button[type=submit]'))
  submit.disabled = !connected
  $(`${id}-offline`).hidden = connected
}

function button (text, action, onClick) {
  const b = document.createElement('button')
  b.type = 'button'
  b.className = 'button secondary'
  b.dataset.action = action
  b.textContent = text
  b.addEventListener('click', onClick)
  return b
}

/**
 * Sets up both panels for Yjs document `docName` (with the client `token`, if any); returns
 * an object whose `setOnline` follows the page's connection wish.
 */
export function startRegisterPanels (docName, who, token = null) {
  const names = companionNames(docName)
  if (!names) {
    say($('registers-note'), 'This document name is too long to add a title and notes to it.', true)
    $('title-form').hidden = true
    $('notes-form').hidden = true
    return { setOnline () {} }
  }
  const title = new TitlePanel(names.title, who, token)
  const notes = new NotesPanel(names.notes, who, token)
  const ready = Promise.all([ensureRegisterDoc(names.title, 'lww', token), ensureRegisterDoc(names.notes, 'manual', token)])
    .then(([titleProblem, notesProblem]) => {
      if (titleProblem) say(title.status, titleProblem, true)
      if (notesProblem) say(notes.status, notesProblem, true)
      return { title: !titleProblem, notes: !notesProblem }
    })
    .catch(() => ({ title: false, notes: false }))
  let online = true
  const apply = (usable) => {
    for (const [panel, ok] of [[title, usable.title], [notes, usable.notes]]) {
      if (online && ok) panel.channel.connect()
      else panel.channel.disconnect()
    }
  }
  ready.then(apply)
  return {
    title,
    notes,
    setOnline (wanted) {
      online = wanted
      ready.then(apply)
    }
  }
}
