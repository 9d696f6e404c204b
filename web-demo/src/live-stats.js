// The live panel's numbers: document updates per second over a sliding window, and the
// round-trip time of an HTTP request to the relay.

/** Counts events over the last `windowMs` milliseconds. */
export class RateMeter {
  /** @param {number} windowMs */
  constructor (windowMs = 5000) {
    this.windowMs = windowMs
    /** @type {number[]} event times, oldest first */
    this.times = []
  }

  /** @param {number} now */
  record (now) {
    this.times.push(now)
    this.#trim(now)
  }

  /** Events per second over the window ending at `now`. */
  perSecond (now) {
    this.#trim(now)
    return this.times.length / (this.windowMs / 1000)
  }

  /** @param {number} now */
  #trim (now) {
    let drop = 0
    while (drop < this.times.length && this.times[drop] <= now - this.windowMs) drop++
    if (drop > 0) this.times.splice(0, drop)
  }
}

/**
 * Milliseconds for one `GET url` to the relay, or null when it fails.
 *
 * @param {string} url
 * @param {(url: string, init: RequestInit) => Promise<Response>} fetchFn
 * @param {() => number} now
 */
export async function measureRoundTrip (url, fetchFn = fetch, now = () => performance.now()) {
  const start = now()
  try {
    const response = await fetchFn(url, { cache: 'no-store' })
    await response.arrayBuffer()
    return response.ok ? now() - start : null
  } catch {
    return null
  }
}
