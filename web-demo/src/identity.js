// Who this browser is in presence: a name and a colour, kept in localStorage.

const STORAGE_KEY = 'aetherflow-demo-user'

/** Colours with enough contrast against white text (the remote caret's name label). */
export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#17806d', '#b35806']

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
  return { name: name.trim() || 'Anonymous', color, colorLight: color + '33' }
}
