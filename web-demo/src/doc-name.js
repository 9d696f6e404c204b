// Document names, checked exactly as the relay checks them (crdt/src/doc_name.rs), so the page
// refuses a bad name before the relay answers 400 to the WebSocket upgrade.

/** Longest accepted document name, in bytes of UTF-8 (the relay's MAX_DOC_NAME_BYTES). */
export const MAX_DOC_NAME_BYTES = 255

/** The document opened when the address names none. */
export const DEFAULT_DOC_NAME = 'welcome'

// Rust's `char::is_control`: the Unicode Cc category, U+0000–U+001F and U+007F–U+009F.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/ // eslint-disable-line no-control-regex

/**
 * Why `name` is not a valid document name, or null when it is.
 *
 * @param {string} name
 * @returns {string | null}
 */
export function docNameProblem (name) {
  if (name.length === 0) return 'Enter a document name.'
  const bytes = new TextEncoder().encode(name).length
  if (bytes > MAX_DOC_NAME_BYTES) {
    return `A document name is at most ${MAX_DOC_NAME_BYTES} bytes; this one is ${bytes}.`
  }
  if (CONTROL.test(name)) return 'A document name cannot contain control characters.'
  if (/[/\\]/.test(name)) return 'A document name cannot contain / or \\.'
  return null
}

/**
 * The document named by a page address (`?doc=NAME`), the default when it names none, and the
 * problem with the name when it is not valid.
 *
 * @param {string} search  `location.search`
 * @returns {{ name: string, problem: string | null }}
 */
export function docNameFromSearch (search) {
  const raw = new URLSearchParams(search).get('doc')
  if (raw === null || raw === '') return { name: DEFAULT_DOC_NAME, problem: null }
  return { name: raw, problem: docNameProblem(raw) }
}

/**
 * The page address of document `name`, relative to the current page.
 *
 * @param {string} name
 */
export function docHref (name) {
  return '?' + new URLSearchParams({ doc: name }).toString()
}
