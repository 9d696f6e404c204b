// The README's own path: the same document in a second window of one browser, and offline
// edits that must survive a reload. Real relay, Debian's Chromium (see harness.js).

import assert from 'node:assert/strict'
import { describe } from 'node:test'

import {
  browserSuite, docName, indicator, openPerson, screenshot, textOf, typeAtEnd, waitForIndicator, waitForPage, waitForSameText
} from './harness.js'

const suite = browserSuite()
const { browserTest } = suite

/** A second page (tab) in `first`'s browser context, on the same document. */
async function secondTab (first, name) {
  const page = await first.context.newPage()
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))
  page.on('console', (msg) => { if (msg.type() === 'error') errors.push(msg.text()) })
  await page.goto(first.page.url())
  const tab = { name, context: first.context, page, errors }
  suite.open.push({ ...tab, context: { close: async () => {} } })
  return tab
}

describe('one browser, several tabs; reloads', () => {
  browserTest('a second and third tab of the same document reach "synced", also after a reload', async () => {
    const doc = docName('tabs')
    const ada = await openPerson(suite.browser, suite.relay, { name: 'Ada', color: '#1f77b4', doc })
    suite.open.push(ada)
    await waitForIndicator(ada, 'synced', false)
    await typeAtEnd(ada, 'Written in the first tab. ')
    await waitForIndicator(ada, 'synced', false)

    const tab2 = await secondTab(ada, 'Ada (tab 2)')
    await waitForIndicator(tab2, 'synced', false)
    assert.equal(await textOf(tab2), 'Written in the first tab. ')
    const tab3 = await secondTab(ada, 'Ada (tab 3)')
    await waitForIndicator(tab3, 'synced', false)
    await screenshot(tab3, 'tabs-1-third-tab-synced')

    // Typing in one tab: every tab ends synced with the same text.
    await typeAtEnd(tab2, 'Then in the second. ')
    await waitForSameText([ada, tab2, tab3], 'the second tab’s edit in all tabs', (t) => t.endsWith('Then in the second. '))
    for (const p of [ada, tab2, tab3]) await waitForIndicator(p, 'synced', false)

    await tab2.page.reload()
    await waitForIndicator(tab2, 'synced', false)
    assert.equal((await indicator(tab2)).text, 'Synced: all changes saved')
    await screenshot(tab2, 'tabs-2-reloaded-tab-synced')
  })

  browserTest('edits made offline survive a reload and reach the others on reconnect', async () => {
    const doc = docName('reload')
    const ada = await openPerson(suite.browser, suite.relay, { name: 'Ada', color: '#1f77b4', doc })
    const bob = await openPerson(suite.browser, suite.relay, { name: 'Bob', color: '#d62728', doc })
    suite.open.push(ada, bob)
    for (const p of [ada, bob]) await waitForIndicator(p, 'synced', false)
    await typeAtEnd(ada, 'Shared start. ')
    await waitForSameText([ada, bob], 'the shared start', (t) => t === 'Shared start. ')

    await ada.page.getByRole('button', { name: 'Work offline' }).click()
    await waitForIndicator(ada, 'offline', false)
    await typeAtEnd(ada, 'Kept in this suite.browser. ')
    await waitForIndicator(ada, 'offline', true)
    assert.match((await indicator(ada)).text, /kept in this browser/)
    await screenshot(ada, 'reload-1-offline-edit')
    // The page says where the text is kept before the reload.
    await waitForPage(ada, 'the text to be stored in this browser',
      () => window.aetherflowDemo.persistence?.synced === true)

    // Reload: the offline edit never reached the relay, so it can only come from this suite.browser.
    await ada.page.reload()
    await waitForPage(ada, 'the offline edit back in the editor after the reload',
      () => window.aetherflowDemo.view.state.doc.toString().includes('Kept in this suite.browser. '),
      undefined, () => window.aetherflowDemo.view.state.doc.toString())
    await waitForIndicator(ada, 'synced', false)
    await waitForSameText([ada, bob], 'the offline edit at Bob’s too', (t) => t === 'Shared start. Kept in this suite.browser. ')
    await screenshot(bob, 'reload-2-bob-gets-the-kept-edit')
  })
})
