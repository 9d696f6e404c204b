// Shared helpers for the browser tests: start the real relay (binary at AETHERFLOW_BIN or
// <repo>/target/debug/aetherflow) on port 0 with a temporary data dir, launch Debian's
// Chromium headless through playwright-core, open the demo page in fresh browser contexts,
// poll page state with timeouts, and save screenshots under test-artifacts/.
//
// The relay start-up follows tests/interop/test/harness.js (copied, not imported: the two
// packages install separately).

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'
import { spawn } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

import { chromium } from 'playwright-core'

const here = path.dirname(fileURLToPath(import.meta.url))
export const WEB_DEMO = path.resolve(here, '..')
export const REPO_ROOT = path.resolve(WEB_DEMO, '..')
export const ARTIFACTS = path.join(WEB_DEMO, 'test-artifacts')

/** Upper bound for any one awaited page state; a test fails with a clear message past it. */
export const TIMEOUT_MS = Number(process.env.BROWSER_TEST_TIMEOUT_MS || 20_000)
const READY_TIMEOUT_MS = 30_000

const READY_LINE = /ready: http:\/\/([0-9.]+):(\d+)/

/** Every relay spawned by this file, so none outlives the test process. */
const liveChildren = new Set()
process.on('exit', () => {
  for (const child of liveChildren) {
    try { child.kill('SIGKILL') } catch {}
  }
})

/** Races a promise against a timeout that fails with `what`. */
export function withTimeout (promise, what, timeoutMs = TIMEOUT_MS) {
  let timer
  const timeout = new Promise((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** A running relay process. */
export class Relay {
  constructor (child, dataDir) {
    this.child = child
    this.dataDir = dataDir
    this.stdout = ''
    this.stderr = ''
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        liveChildren.delete(child)
        resolve({ code, signal })
      })
    })
    child.stderr.on('data', (chunk) => { this.stderr += chunk })
  }

  get url () { return `http://127.0.0.1:${this.port}` }

  /** Sends `signal` to the relay (e.g. SIGSTOP / SIGCONT to freeze and thaw it). */
  signal (signal) { this.child.kill(signal) }

  /** `kill -9`: ends the relay at once and keeps its data dir for a restart. */
  async kill () {
    this.child.kill('SIGKILL')
    await withTimeout(this.exited, 'the killed relay to exit')
  }

  async stop () {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGCONT')
      this.child.kill('SIGKILL')
      await withTimeout(this.exited, 'the relay to exit')
    }
    await rm(this.dataDir, { recursive: true, force: true })
  }

  logs () {
    return `----- relay stdout -----\n${this.stdout}----- relay stderr -----\n${this.stderr}----- end relay -----`
  }
}

/**
 * Starts the relay binary on 127.0.0.1:0 with a fresh data dir (or `dataDir`, e.g. a killed
 * relay's, to restart it); resolves once it is ready.
 */
export async function startRelay (extraArgs = [], { dataDir: reuse } = {}) {
  const bin = process.env.AETHERFLOW_BIN || path.join(REPO_ROOT, 'target', 'debug', 'aetherflow')
  if (!existsSync(bin)) {
    throw new Error(`relay binary not found at ${bin}: run \`cargo build -p aetherflow-server\` ` +
      'at the repo root or set AETHERFLOW_BIN')
  }
  const dataDir = reuse ?? await mkdtemp(path.join(tmpdir(), 'aetherflow-browser-'))
  const args = ['--http-addr', '127.0.0.1:0', '--data-dir', dataDir, '--quantum-addr', 'off', ...extraArgs]
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { RUST_BACKTRACE: '1', ...process.env } })
  liveChildren.add(child)
  const relay = new Relay(child, dataDir)
  child.on('error', (err) => { relay.stderr += `spawn error: ${err.message}\n` })
  try {
    relay.port = await withTimeout(new Promise((resolve, reject) => {
      let buffered = ''
      child.stdout.on('data', (chunk) => {
        relay.stdout += chunk
        buffered += chunk
        const m = READY_LINE.exec(buffered)
        if (m) resolve(Number(m[2]))
      })
      relay.exited.then(({ code, signal }) =>
        reject(new Error(`relay exited (code ${code}, signal ${signal}) before printing its ready line`)))
    }), `${bin} ${args.join(' ')} to print its ready line`, READY_TIMEOUT_MS)
    return relay
  } catch (err) {
    child.kill('SIGKILL')
    err.message += `\n${relay.logs()}`
    throw err
  }
}

/** Debian's Chromium, or CHROMIUM_BIN. */
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium'

/**
 * Launches Chromium headless. Playwright gives each launch a fresh temporary user-data-dir
 * and removes it on close, so no state leaks between runs.
 */
export async function launchBrowser () {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: \`apt-get install chromium\` or set CHROMIUM_BIN`)
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync'
    ]
  })
}

/**
 * A person at the demo page: a fresh browser context (own storage, own network state) whose
 * saved identity is `name` and `color`, with the page open on document `doc`. `mode` is
 * `text` (default here: the plain-text editor on the Y.Text, which most tests read) or `rich`
 * (the page's default, ProseMirror on the Y.XmlFragment).
 */
export async function openPerson (browser, relay, options) {
  const { name, color, doc, viewport = { width: 1100, height: 760 }, mode = 'text' } = options
  const context = await browser.newContext({ viewport })
  await context.addInitScript(([name, color]) => {
    if (!localStorage.getItem('aetherflow-demo-user')) {
      localStorage.setItem('aetherflow-demo-user', JSON.stringify({ name, color }))
    }
  }, [name, color])
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()) })
  const token = options.token ? `&token=${encodeURIComponent(options.token)}` : ''
  const modeParam = mode === 'text' ? '&mode=text' : ''
  await page.goto(`${relay.url}/?doc=${encodeURIComponent(doc)}${modeParam}${token}`)
  return { name, context, page, errors }
}

/**
 * Resolves once `fn(arg)`, run in the page, returns a truthy value; polls every 50 ms.
 * Rejects after TIMEOUT_MS with `what` and the last value of `describe` (run in the page).
 */
export async function waitForPage (person, what, fn, arg, describe = () => document.getElementById('status')?.dataset.state) {
  try {
    const handle = await person.page.waitForFunction(fn, arg, { timeout: TIMEOUT_MS, polling: 50 })
    return handle.jsonValue()
  } catch (err) {
    let state = ''
    try { state = JSON.stringify(await person.page.evaluate(describe)) } catch {}
    throw new Error(`${person.name}: timed out waiting for ${what} (last state: ${state}): ${err.message.split('\n')[0]}`)
  }
}

/** The connection indicator's state and whether it shows pending changes. */
export function indicator (person) {
  return person.page.evaluate(() => {
    const el = document.getElementById('status')
    return { state: el.dataset.state, pending: el.dataset.pending === 'true', text: el.textContent.trim() }
  })
}

/** Waits for the indicator to show `state` (and `pending`, when given). */
export function waitForIndicator (person, state, pending) {
  return waitForPage(person, `the indicator to show ${state}${pending === undefined ? '' : ` with pending=${pending}`}`,
    ([state, pending]) => {
      const el = document.getElementById('status')
      return el.dataset.state === state && (pending === null || el.dataset.pending === String(pending))
    }, [state, pending ?? null], () => document.getElementById('status').dataset)
}

/** The shared text as the page's Yjs document and its editor hold it; throws if they differ. */
export async function textOf (person) {
  const { ytext, editor } = await person.page.evaluate(() => ({
    ytext: window.aetherflowDemo.ytext.toString(),
    editor: window.aetherflowDemo.view.state.doc.toString()
  }))
  if (ytext !== editor) throw new Error(`${person.name}: editor shows ${JSON.stringify(editor)} but the Y.Text holds ${JSON.stringify(ytext)}`)
  return ytext
}

/** Waits until every person's text satisfies `check(text)` and all texts are equal. */
export async function waitForSameText (people, what, check = () => true) {
  const deadline = Date.now() + TIMEOUT_MS
  let texts = []
  for (;;) {
    texts = await Promise.all(people.map(textOf))
    if (texts.every((t) => t === texts[0] && check(t))) return texts[0]
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}: ${people.map((p, i) => `${p.name}=${JSON.stringify(texts[i])}`).join(', ')}`)
    }
    await people[0].page.waitForTimeout(50) // a poll interval, not a synchronisation
  }
}

/** Puts the caret at the end of the editor and types `text` with the keyboard. */
export async function typeAtEnd (person, text) {
  await person.page.locator('.cm-content').click()
  await person.page.keyboard.press('Control+End')
  await person.page.keyboard.type(text)
}

/**
 * Saves a full-page screenshot as test-artifacts/<name>.png, and checks the page in that
 * state with axe-core: every state a test takes a picture of is also checked.
 */
export async function screenshot (person, name) {
  await mkdir(ARTIFACTS, { recursive: true })
  await person.page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true })
  await assertAccessible(person, name)
}

let axeSource = null

/** Fails when axe-core finds a serious or critical violation on the page as it is now. */
export async function assertAccessible (person, state) {
  axeSource ??= await readFile(path.join(WEB_DEMO, 'node_modules', 'axe-core', 'axe.min.js'), 'utf8')
  if (!(await person.page.evaluate(() => typeof window.axe !== 'undefined'))) {
    await person.page.addScriptTag({ content: axeSource })
  }
  const violations = await person.page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ['violations'] })
    return result.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.help}; ${v.nodes.slice(0, 3).map((n) => n.html.slice(0, 160)).join(' | ')}`)
  })
  if (violations.length) throw new Error(`${person.name}: axe-core in state "${state}":\n${violations.join('\n')}`)
}

/** A unique document name per test. */
export function docName (prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
}

/** An HS256 client token signed with `secret`, as the relay verifies them. */
export function mintToken (secret, claims) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url')
  const body = `${encode({ alg: 'HS256', typ: 'JWT' })}.${encode(claims)}`
  const signature = createHmac('sha256', secret).update(body).digest('base64url')
  return `${body}.${signature}`
}

/**
 * One relay and one browser for the test file that calls this (started before its tests,
 * stopped after), with the helpers every browser test file uses:
 * `person(name, color, doc, options)` opens the page for a person and waits until it has
 * synced; `browserTest(name, fn)` runs `fn`, checks that no page reported an error, prints
 * the relay's logs and the page errors on failure, and closes the test's browser contexts
 * whatever happens. `suite.relay` and `suite.browser` are set once the suite has started.
 * `personDefaults` are options every `person` gets (e.g. `{ mode: 'rich' }`); `timeoutMs` is
 * each test's time limit; `relayArgs` are extra relay flags (e.g. `['--jwt-secret', S]`).
 */
export function browserSuite ({ personDefaults = {}, timeoutMs = 90_000, relayArgs = [] } = {}) {
  const suite = {
    relay: null,
    browser: null,
    /** Contexts opened by the running test, closed after it whatever happens. */
    open: [],
    async person (name, color, doc, options = {}) {
      const p = await openPerson(suite.browser, suite.relay, { name, color, doc, ...personDefaults, ...options })
      suite.open.push(p)
      await waitForIndicator(p, 'synced', false)
      return p
    },
    browserTest (name, fn) {
      test(name, { timeout: timeoutMs }, async () => {
        suite.open = []
        try {
          await fn()
          for (const p of suite.open) assert.deepEqual(p.errors, [], `${p.name}'s page reported errors`)
        } catch (err) {
          console.error(`\n##### ${name} failed: ${err.message}\n${suite.relay.logs()}`)
          for (const p of suite.open) if (p.errors.length) console.error(`${p.name}'s page errors:`, p.errors)
          throw err
        } finally {
          suite.relay.signal('SIGCONT') // in case a test froze it and failed
          await Promise.all(suite.open.map((p) => p.context.close().catch(() => {})))
        }
      })
    }
  }
  before(async () => {
    suite.relay = await startRelay(relayArgs)
    suite.browser = await launchBrowser()
  })
  after(async () => {
    await suite.browser?.close()
    await suite.relay?.stop()
  })
  return suite
}

