// The client token (JWT) the page presents when the relay runs with auth: given once in the
// address (`?token=JWT`), then kept for this tab in sessionStorage so opening another document
// keeps it. Without one the page talks to an open relay.

const STORAGE_KEY = 'aetherflow-demo-token'

/**
 * The token from the address, remembered for the tab; else the one remembered; else null.
 *
 * @param {string} search  `location.search`
 * @param {Storage} storage  `sessionStorage`
 * @returns {string | null}
 */
export function loadToken (search, storage) {
  const given = new URLSearchParams(search).get('token')
  if (given) {
    storage.setItem(STORAGE_KEY, given)
    return given
  }
  return storage.getItem(STORAGE_KEY)
}

/** Request headers carrying `token`, if any. @param {string | null} token */
export function authHeaders (token) {
  return token ? { authorization: `Bearer ${token}` } : {}
}
