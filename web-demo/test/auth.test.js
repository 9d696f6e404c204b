// The demo page against a relay with auth on: a token given once in the address (`?token=`)
// is used for the document's WebSocket, the register documents and their live channel, and
// leaves the address bar.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import {
  docName, launchBrowser, mintToken, openPerson, screenshot, startRelay, textOf, typeAtEnd,
  waitForIndicator, waitForPage, waitForSameText
} from './harness.js'

const SECRET = 'browser-test-secret-0123456789'
let relay
let browser

before(async () => {
  relay = await startRelay(['--jwt-secret', SECRET])
  browser = await launchBrowser()
})

after(async () => {
  await browser?.close()
  await relay?.stop()
})

test('with auth on, people holding a token edit the text and the title together', { timeout: 90_000 }, async () => {
  const doc = docName('secured')
  const exp = Math.floor(Date.now() / 1000) + 3600
  const token = (sub) => mintToken(SECRET, { sub, docs: [`${doc}*`], perm: 'write', exp })
  const people = []
  try {
    for (const [name, color] of [['Ada', '#1f77b4'], ['Bob', '#d62728']]) {
      const p = await openPerson(browser, relay, { name, color, doc, token: token(name.toLowerCase()) })
      people.push(p)
      await waitForIndicator(p, 'synced', false)
      assert.equal(new URL(p.page.url()).searchParams.get('token'), null, 'the token left the address bar')
    }
    const [ada, bob] = people
    await typeAtEnd(ada, 'Only for token holders.')
    await waitForSameText([ada, bob], 'Ada’s text at Bob’s', (t) => t === 'Only for token holders.')

    await waitForPage(ada, 'the title panel to connect',
      () => !document.getElementById('title-form').hasAttribute('data-offline') &&
        document.getElementById('title-status').textContent !== '')
    await ada.page.getByLabel('Document title', { exact: true }).fill('Secured plan')
    await ada.page.getByLabel('Document title', { exact: true }).press('Enter')
    await waitForPage(bob, 'Ada’s title', () => document.getElementById('title-input').value === 'Secured plan',
      undefined, () => document.getElementById('title-status').textContent)
    await screenshot(bob, 'auth-1-bob-with-token')

    // Opening another document in the same tab keeps the token.
    const other = `${doc}-2`
    await Promise.all([bob.page.waitForURL((url) => url.searchParams.get('doc') === other),
      bob.page.getByLabel('Document name').fill(other).then(() => bob.page.getByLabel('Document name').press('Enter'))])
    await waitForIndicator(bob, 'synced', false)
    assert.equal(await textOf(bob), '')
    for (const p of people) assert.deepEqual(p.errors, [], `${p.name}'s page reported errors`)
  } catch (err) {
    console.error(relay.logs())
    throw err
  } finally {
    await Promise.all(people.map((p) => p.context.close().catch(() => {})))
  }
})
