// Who this browser is in presence: a name and a colour, kept in localStorage.

const STORAGE_KEY = 'aetherflow-demo-user'

/**
 * Twelve distinct hues, each with at least 4.5:1 contrast against white text (the remote
 * caret's name label is white on the person's colour).
 */
export const PALETTE = [
  '#1f77b4', '#d62728', '#2e7d32', '#7b1fa2', '#8c564b', '#c2185b',
  '#17806d', '#b35806', '#3949ab', '#827717', '#37474f', '#5e35b1'
]

/** WCAG AA for normal text: what a name label must reach against its white text. */
export const MIN_LABEL_CONTRAST = 4.5

/** @param {string} hex `#rrggbb` @returns {number[]} r, g, b in 0..255 */
const channels = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16))

/** WCAG relative luminance of `#rrggbb`. */
export function luminance (hex) {
  const [r, g, b] = channels(hex).map((v) => v / 255).map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
  return 0.2126 * r + 0.7152 * g + 0.0722 * b
}

/** Contrast ratio of white text on `#rrggbb`. */
export function contrastWithWhite (hex) {
  return 1.05 / (luminance(hex) + 0.05)
}

/**
 * `hex`, darkened just enough (same hue) for white text on it to reach 4.5:1; any colour a
 * person picks is shown to the others through this.
 *
 * @param {string} hex `#rrggbb`
 */
export function readableColor (hex) {
  if (!/^#[0-9a-f]{6}$/i.test(hex)) return PALETTE[0]
  let rgb = channels(hex)
  const toHex = (c) => '#' + c.map((v) => Math.round(v).toString(16).padStart(2, '0')).join('')
  // At most 100 steps of 3 %: ends at black, which passes.
  for (let i = 0; i < 100 && contrastWithWhite(toHex(rgb)) < MIN_LABEL_CONTRAST; i++) {
    rgb = rgb.map((v) => v * 0.97)
  }
  return toHex(rgb).toLowerCase() === hex.toLowerCase() ? hex : toHex(rgb)
}

/**
 * The colour for a newcomer: the first palette colour nobody in `taken` uses, else a random one.
 *
 * @param {Iterable<string>} taken colours in use
 */
export function freeColor (taken) {
  const used = new Set([...taken].map((c) => c.toLowerCase()))
  return PALETTE.find((c) => !used.has(c)) ?? pick(PALETTE)
}

/**
 * `name`, or `name (2)`, `name (3)`… whichever nobody in `taken` uses.
 *
 * @param {string} name @param {Iterable<string>} taken names in use
 */
export function freeName (name, taken) {
  const used = new Set(taken)
  if (!used.has(name)) return name
  let n = 2
  while (used.has(`${name} (${n})`)) n++
  return `${name} (${n})`
}

const ADJECTIVES = ['Quick', 'Calm', 'Bright', 'Brave', 'Kind', 'Keen', 'Bold', 'Wise']
const ANIMALS = ['Otter', 'Heron', 'Lynx', 'Badger', 'Falcon', 'Marten', 'Ibex', 'Wren']

/** @param {readonly string[]} list */
const pick = (list) => list[Math.floor(Math.random() * list.length)]

/**
 * @typedef {{ name: string, color: string }} Identity
 */

/**
 * The saved identity, or a new random one (saved).
 *
 * @param {Storage} storage
 * @returns {Identity}
 */
export function loadIdentity (storage) {
  try {
    const saved = JSON.parse(storage.getItem(STORAGE_KEY) || 'null')
    if (saved && typeof saved.name === 'string' && /^#[0-9a-f]{6}$/i.test(saved.color)) {
      return { name: saved.name.slice(0, 60), color: saved.color }
    }
  } catch {}
  const identity = { name: `${pick(ADJECTIVES)} ${pick(ANIMALS)}`, color: pick(PALETTE) }
  saveIdentity(storage, identity)
  return identity
}

/**
 * @param {Storage} storage
 * @param {Identity} identity
 */
export function saveIdentity (storage, identity) {
  try {
    storage.setItem(STORAGE_KEY, JSON.stringify(identity))
  } catch {} // private mode or full storage: presence still works for this page
}

/**
 * The awareness `user` field y-codemirror.next draws remote carets and selections from.
 *
 * @param {Identity} identity
 */
export function awarenessUser ({ name, color }) {
  const shown = readableColor(color)
  return { name: name.trim() || 'Anonymous', color: shown, colorLight: shown + '33' }
}
