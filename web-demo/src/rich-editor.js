// The rich-text editor: ProseMirror bound to a `Y.XmlFragment` through `y-prosemirror`
// (sync, remote cursors, undo), with a small toolbar for headings, lists, bold, italic and
// links, and Markdown-like shortcuts ("# ", "- ", "1. ").

import * as Y from 'yjs'
import { ySyncPlugin, yCursorPlugin, yUndoPlugin, undo, redo, initProseMirrorDoc, prosemirrorJSONToYXmlFragment } from 'y-prosemirror'
import { Schema } from 'prosemirror-model'
import { EditorState } from 'prosemirror-state'
import { EditorView } from 'prosemirror-view'
import { schema as basicSchema } from 'prosemirror-schema-basic'
import { addListNodes, wrapInList, splitListItem, liftListItem, sinkListItem } from 'prosemirror-schema-list'
import { keymap } from 'prosemirror-keymap'
import { baseKeymap, toggleMark, setBlockType } from 'prosemirror-commands'
import { inputRules, wrappingInputRule, textblockTypeInputRule } from 'prosemirror-inputrules'

import { readableColor } from './identity.js'

/** The fragment's name in the Y.Doc: y-prosemirror's own default. */
export const FRAGMENT_NAME = 'prosemirror'

/** Paragraphs, headings 1–3, bullet and numbered lists, bold, italic, links, code, quotes. */
export const schema = new Schema({
  nodes: addListNodes(basicSchema.spec.nodes, 'paragraph block*', 'block'),
  marks: basicSchema.spec.marks
})

/**
 * The name label of a remote caret. The colour is made readable here too, so a label stays
 * legible whatever colour another client publishes.
 *
 * @param {{ name?: unknown, color?: unknown }} user
 */
function cursorLabel (user, clientId) {
  const caret = document.createElement('span')
  caret.className = 'ProseMirror-yjs-cursor'
  caret.dataset.clientId = String(clientId)
  const label = document.createElement('span')
  label.className = 'remote-label'
  caret.append('\u2060', label, '\u2060')
  paintCursor(caret, user)
  return caret
}

/** Colours and names a caret from the person's awareness `user` field. */
function paintCursor (caret, user) {
  const color = readableColor(typeof user?.color === 'string' ? user.color : '')
  caret.style.borderColor = color
  const label = /** @type {HTMLElement} */ (caret.querySelector('.remote-label'))
  label.style.backgroundColor = color
  label.textContent = typeof user?.name === 'string' ? user.name : 'Someone'
}

/**
 * A light tint of the person's colour behind their selection, light enough that any text
 * (links included) keeps its contrast.
 */
function selectionTint (user) {
  const color = readableColor(typeof user?.color === 'string' ? user.color : '')
  return { style: `background-color: ${color}29`, class: 'ProseMirror-yjs-selection' }
}

/**
 * y-prosemirror keys a caret by client id and keeps its element while only the name or colour
 * changes: repaint the carets in place when presence changes.
 */
function repaintCursors (root, awareness) {
  const states = awareness.getStates()
  for (const caret of root.querySelectorAll('.ProseMirror-yjs-cursor[data-client-id]')) {
    const state = states.get(Number(/** @type {HTMLElement} */ (caret).dataset.clientId))
    if (state) paintCursor(caret, state.user)
  }
}

/** Whether `mark` is active over the selection. */
function markActive (state, type) {
  const { from, $from, to, empty } = state.selection
  if (empty) return Boolean(type.isInSet(state.storedMarks || $from.marks()))
  // Pressed when all the selected text has it, as toggling would then remove it.
  let text = false
  let all = true
  state.doc.nodesBetween(from, to, (node) => {
    if (node.isText) {
      text = true
      if (!type.isInSet(node.marks)) all = false
    }
  })
  return text && all
}

/** The toolbar's buttons: label, command, and whether it shows as pressed. */
function toolbarItems () {
  const { nodes, marks } = schema
  const heading = (level) => ({
    label: `Heading ${level}`,
    run: (state, dispatch) => {
      const on = state.selection.$from.parent.hasMarkup(nodes.heading, { level })
      return setBlockType(on ? nodes.paragraph : nodes.heading, on ? {} : { level })(state, dispatch)
    },
    active: (state) => state.selection.$from.parent.hasMarkup(nodes.heading, { level })
  })
  return [
    { label: 'Bold', run: toggleMark(marks.strong), active: (s) => markActive(s, marks.strong) },
    { label: 'Italic', run: toggleMark(marks.em), active: (s) => markActive(s, marks.em) },
    heading(1),
    heading(2),
    { label: 'Bullet list', run: wrapInList(nodes.bullet_list), active: () => false },
    { label: 'Numbered list', run: wrapInList(nodes.ordered_list), active: () => false }
  ]
}

/**
 * Builds the toolbar into `toolbar` and the link form into `linkForm`; returns a function
 * that refreshes the buttons' pressed states from the view.
 */
function buildToolbar (view, toolbar, linkForm) {
  const buttons = toolbarItems().map((item) => {
    const b = document.createElement('button')
    b.type = 'button'
    b.className = 'tool'
    b.textContent = item.label
    b.dataset.tool = item.label
    b.addEventListener('mousedown', (e) => e.preventDefault()) // keep the editor's selection
    b.addEventListener('click', () => { item.run(view.state, view.dispatch, view); view.focus() })
    return { b, item }
  })
  const linkButton = document.createElement('button')
  linkButton.type = 'button'
  linkButton.className = 'tool'
  linkButton.textContent = 'Link'
  linkButton.setAttribute('aria-expanded', 'false')
  linkButton.setAttribute('aria-controls', linkForm.id)
  toolbar.replaceChildren(...buttons.map(({ b }) => b), linkButton)

  const urlInput = /** @type {HTMLInputElement} */ (linkForm.querySelector('input'))
  const linkError = /** @type {HTMLElement} */ (linkForm.querySelector('.error'))
  /** The selection the link applies to, kept while focus is in the form. */
  let target = null
  const closeLinkForm = () => {
    linkForm.hidden = true
    linkButton.setAttribute('aria-expanded', 'false')
    linkError.textContent = ''
  }
  linkButton.addEventListener('click', () => {
    const { from, to } = view.state.selection
    target = { from, to }
    const mark = view.state.doc.rangeHasMark(from, Math.max(to, from + 1), schema.marks.link)
    urlInput.value = mark ? findLinkHref(view.state, from) : 'https://'
    linkForm.hidden = false
    linkButton.setAttribute('aria-expanded', 'true')
    urlInput.focus()
    urlInput.select()
  })
  linkForm.addEventListener('submit', (event) => {
    event.preventDefault()
    const href = urlInput.value.trim()
    if (!/^(https?:\/\/|mailto:)\S+$/i.test(href)) {
      linkError.textContent = 'A link starts with http://, https:// or mailto:.'
      urlInput.focus()
      return
    }
    if (!target || target.from === target.to) {
      linkError.textContent = 'Select the words to link first.'
      return
    }
    const { tr } = view.state
    tr.removeMark(target.from, target.to, schema.marks.link)
    tr.addMark(target.from, target.to, schema.marks.link.create({ href }))
    view.dispatch(tr)
    closeLinkForm()
    view.focus()
  })
  linkForm.querySelector('[data-action=cancel]')?.addEventListener('click', () => { closeLinkForm(); view.focus() })
  linkForm.addEventListener('keydown', (event) => {
    if (event.key === 'Escape') { closeLinkForm(); view.focus() }
  })

  return (state) => {
    for (const { b, item } of buttons) {
      b.setAttribute('aria-pressed', String(item.active(state)))
    }
  }
}

/** The href of the link mark at `pos`, or ''. */
function findLinkHref (state, pos) {
  const mark = state.doc.resolve(pos).marks().find((m) => m.type === schema.marks.link) ||
    state.doc.nodeAt(pos)?.marks.find((m) => m.type === schema.marks.link)
  return mark ? mark.attrs.href : ''
}

/** Markdown-like shortcuts at the start of a line. */
function shortcuts () {
  const { nodes } = schema
  return inputRules({
    rules: [
      textblockTypeInputRule(/^(#{1,3})\s$/, nodes.heading, (m) => ({ level: m[1].length })),
      wrappingInputRule(/^\s*([-*])\s$/, nodes.bullet_list),
      wrappingInputRule(/^(\d+)\.\s$/, nodes.ordered_list, (m) => ({ order: Number(m[1]) }),
        (m, node) => node.childCount + node.attrs.order === Number(m[1])),
      wrappingInputRule(/^\s*>\s$/, nodes.blockquote)
    ]
  })
}

/**
 * Mounts the rich-text editor on `fragment` in `parent`.
 *
 * @param {{ parent: HTMLElement, toolbar: HTMLElement, linkForm: HTMLFormElement,
 *           fragment: Y.XmlFragment, awareness: any, label: string }} options
 */
export function mountRichEditor ({ parent, toolbar, linkForm, fragment, awareness, label }) {
  const { doc, mapping } = initProseMirrorDoc(fragment, schema)
  let refresh = () => {}
  const view = new EditorView(parent, {
    state: EditorState.create({
      doc,
      schema,
      plugins: [
        ySyncPlugin(fragment, { mapping }),
        yCursorPlugin(awareness, { cursorBuilder: cursorLabel, selectionBuilder: selectionTint }),
        yUndoPlugin(),
        shortcuts(),
        keymap({
          'Mod-z': undo,
          'Mod-y': redo,
          'Mod-Shift-z': redo,
          'Mod-b': toggleMark(schema.marks.strong),
          'Mod-i': toggleMark(schema.marks.em),
          Enter: splitListItem(schema.nodes.list_item),
          'Mod-[': liftListItem(schema.nodes.list_item),
          'Mod-]': sinkListItem(schema.nodes.list_item)
        }),
        keymap(baseKeymap)
      ]
    }),
    attributes: { 'aria-label': label, 'aria-multiline': 'true', role: 'textbox', class: 'rich-content' },
    dispatchTransaction (tr) {
      view.updateState(view.state.apply(tr))
      refresh(view.state)
    }
  })
  awareness.on('change', () => repaintCursors(view.dom, awareness))
  refresh = buildToolbar(view, toolbar, linkForm)
  refresh(view.state)
  return view
}

/** The sample document's text: what the first screen suggests trying. */
const SAMPLE = {
  type: 'doc',
  content: [
    { type: 'heading', attrs: { level: 1 }, content: [{ type: 'text', text: 'Welcome to AetherFlow' }] },
    {
      type: 'paragraph',
      content: [
        { type: 'text', text: 'This is a shared document. Everyone with this page’s address edits it ' },
        { type: 'text', marks: [{ type: 'strong' }], text: 'live' },
        { type: 'text', text: ', and the relay keeps it. Things to try:' }
      ]
    },
    {
      type: 'bullet_list',
      content: [
        'Press “Open a second window” above and type in both.',
        'Press “Work offline”, edit, reload the page, then reconnect: your edits merge.',
        'Format with the toolbar, or type “# ” for a heading and “- ” for a list.'
      ].map((text) => ({ type: 'list_item', content: [{ type: 'paragraph', content: [{ type: 'text', text }] }] }))
    },
    {
      type: 'paragraph',
      content: [
        { type: 'text', text: 'Delete all of this whenever you like; it does not come back. ' },
        { type: 'text', marks: [{ type: 'em' }], text: 'Rich text is a Y.XmlFragment; the plain-text mode edits a Y.Text.' }
      ]
    }
  ]
}

/**
 * The sample as one Yjs update, written by a fixed client id at fixed clocks: every page that
 * adds it adds the very same items, so two pages adding it at once do not duplicate it, and
 * adding it after someone deleted it changes nothing (the relay already has those items).
 */
export function sampleUpdate () {
  const sample = new Y.Doc()
  sample.clientID = 0x5a4d
  prosemirrorJSONToYXmlFragment(schema, SAMPLE, sample.getXmlFragment(FRAGMENT_NAME))
  const update = Y.encodeStateAsUpdate(sample)
  sample.destroy()
  return update
}
