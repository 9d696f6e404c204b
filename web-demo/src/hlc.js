// A hybrid logical clock for last-writer-wins writes, the same rule as the relay's
// crdt/src/register/clock.rs: a stamp is (wall_ms, counter), larger than every stamp this tab
// issued or saw, so a title set after seeing another title always wins over it. Ties between
// equal stamps are broken by the writer id, as on the relay.

/** @typedef {{ wall_ms: number, counter: number }} HlcStamp */
/** @typedef {{ clock: HlcStamp, writer: string }} WriteStamp */

/** Orders two clock readings: negative, zero or positive. @param {HlcStamp} a @param {HlcStamp} b */
export function compareClocks (a, b) {
  return a.wall_ms - b.wall_ms || a.counter - b.counter
}

/** Orders two write stamps by clock, then writer id. @param {WriteStamp} a @param {WriteStamp} b */
export function compareStamps (a, b) {
  const byClock = compareClocks(a.clock, b.clock)
  if (byClock !== 0) return byClock
  return a.writer < b.writer ? -1 : a.writer > b.writer ? 1 : 0
}

export class HybridClock {
  constructor () {
    /** @type {HlcStamp} the last stamp issued or observed */
    this.last = { wall_ms: 0, counter: 0 }
  }

  /** A stamp for a local write at physical time `nowMs`, larger than every stamp before it. */
  tick (nowMs) {
    const wall = Math.floor(nowMs)
    this.last = wall > this.last.wall_ms
      ? { wall_ms: wall, counter: 0 }
      : { wall_ms: this.last.wall_ms, counter: this.last.counter + 1 }
    return { ...this.last }
  }

  /** Takes in a stamp seen elsewhere, so the next `tick` exceeds it. @param {HlcStamp} stamp */
  observe (stamp) {
    if (stamp && compareClocks(stamp, this.last) > 0) this.last = { wall_ms: stamp.wall_ms, counter: stamp.counter }
  }
}
