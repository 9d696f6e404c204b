// The demo page in a real browser (Debian's Chromium, headless, driven by playwright-core)
// against the real relay binary, which serves the page itself. Each person is a separate
// browser context: own storage, own network state, own WebSocket.
//
// What "offline" means here: `context.setOffline(true)` is Chromium's network emulation. It
// makes `navigator.onLine` false, fires the page's `offline` event and fails new requests, but
// it does not close a WebSocket that is already open; frames just stop flowing. The page reacts
// to the browser's `offline` event by closing its socket (as it would when the operating system
// reports a lost network) and to `online` by reconnecting, so the test checks the indicator
// and that nothing the offline person typed reached the other person until the network
// returned. A relay that is alive but not answering is a different case, tested by freezing the
// relay process with SIGSTOP.
//
// Screenshots of every step go to test-artifacts/ (git-ignored).

import assert from 'node:assert/strict'
import { describe } from 'node:test'

import {
  browserSuite, docName, indicator, screenshot, textOf, typeAtEnd, waitForIndicator, waitForPage, waitForSameText
} from './harness.js'

const suite = browserSuite()
const { person, browserTest } = suite

/** Whether the characters of `needle` appear in `haystack` in order (not necessarily together). */
function isSubsequence (needle, haystack) {
  let i = 0
  for (const ch of haystack) if (ch === needle[i]) i++
  return i === needle.length
}

describe('the demo page against the real relay', () => {
  browserTest('two people type into the same document and both end with the same text', async () => {
    const doc = docName('together')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    await screenshot(ada, 'together-1-ada-opened')

    // Both type at the same time, each at the end of the text.
    await Promise.all([
      typeAtEnd(ada, 'Ada writes the introduction. '),
      typeAtEnd(bob, 'Bob adds a conclusion. ')
    ])
    // Each person's typing survives, in order. It need not stay contiguous: a caret standing
    // exactly where the other person inserts may end up on either side of their text.
    const adaTyped = 'Ada writes the introduction. '
    const bobTyped = 'Bob adds a conclusion. '
    const text = await waitForSameText([ada, bob], 'both texts to hold both edits',
      (t) => t.length === adaTyped.length + bobTyped.length &&
        isSubsequence(adaTyped, t) && isSubsequence(bobTyped, t))
    await waitForIndicator(ada, 'synced', false)
    await waitForIndicator(bob, 'synced', false)
    await screenshot(ada, 'together-2-ada-converged')
    await screenshot(bob, 'together-3-bob-converged')

    // A third person opening the document later gets everything from the suite.relay.
    const cleo = await person('Cleo', '#2ca02c', doc)
    assert.equal(await textOf(cleo), text)
  })

  browserTest('each person sees the other’s presence: caret with name, and the people list', async () => {
    const doc = docName('presence')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    await typeAtEnd(ada, 'Hello Bob')
    await typeAtEnd(bob, ', hello Ada')
    await waitForSameText([ada, bob], 'both greetings', (t) => t === 'Hello Bob, hello Ada')

    for (const [viewer, other] of [[ada, bob], [bob, ada]]) {
      await waitForPage(viewer, `${other.name}'s caret with their name in the editor`,
        (name) => [...document.querySelectorAll('.cm-editor .cm-ySelectionCaret .cm-ySelectionInfo')]
          .some((el) => el.textContent === name), other.name,
        () => document.querySelector('.cm-editor')?.innerHTML.slice(0, 400))
      await waitForPage(viewer, `${other.name} in the people list`,
        (name) => [...document.querySelectorAll('#people .person-name')].some((el) => el.textContent === name) &&
          document.getElementById('people-count').textContent === '2',
        other.name, () => document.getElementById('people').textContent)
    }
    const caret = ada.page.locator('.cm-ySelectionCaret').first()
    assert.equal(await caret.evaluate((el) => getComputedStyle(el).backgroundColor), 'rgb(214, 39, 40)', 'Bob’s caret in Bob’s colour')
    await screenshot(ada, 'presence-1-ada-sees-bob')
    await screenshot(bob, 'presence-2-bob-sees-ada')

    // Renaming is live for the others and remembered by the suite.browser.
    await bob.page.getByLabel('Your name').fill('Robert')
    await waitForPage(ada, 'Bob’s new name in the people list',
      () => [...document.querySelectorAll('#people .person-name')].some((el) => el.textContent === 'Robert'),
      undefined, () => document.getElementById('people').textContent)
    await bob.page.reload()
    await waitForIndicator(bob, 'synced', false)
    assert.equal(await bob.page.getByLabel('Your name').inputValue(), 'Robert')

    // When Bob leaves, Ada's page stops showing him.
    await bob.context.close()
    await waitForPage(ada, 'the people list to show only Ada',
      () => document.getElementById('people-count').textContent === '1', undefined,
      () => document.getElementById('people').textContent)
    assert.equal(await ada.page.locator('.cm-ySelectionCaret').count(), 0)
  })

  browserTest('a person taken offline keeps editing and converges after reconnecting', async () => {
    const doc = docName('offline')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    await typeAtEnd(ada, 'Shared start. ')
    await waitForSameText([ada, bob], 'the shared start', (t) => t === 'Shared start. ')
    // Ada's own edit is saved (echoed back to her) before her network goes; otherwise it
    // would rightly stay pending while she is offline.
    await waitForIndicator(ada, 'synced', false)

    await ada.context.setOffline(true)
    await waitForIndicator(ada, 'offline', false)
    await typeAtEnd(ada, 'Written offline by Ada. ')
    await typeAtEnd(bob, 'Written online by Bob. ')
    await waitForIndicator(ada, 'offline', true)
    assert.match((await indicator(ada)).text, /Offline: no network; your changes are kept/)
    await screenshot(ada, 'offline-1-ada-offline-with-pending-changes')
    // Bob is online and synced; Ada's offline edit has not reached him, his has not reached her.
    await waitForIndicator(bob, 'synced', false)
    assert.equal(await textOf(bob), 'Shared start. Written online by Bob. ')
    assert.equal(await textOf(ada), 'Shared start. Written offline by Ada. ')
    await screenshot(bob, 'offline-2-bob-online-meanwhile')

    await ada.context.setOffline(false)
    await waitForIndicator(ada, 'synced', false)
    const text = await waitForSameText([ada, bob], 'both edits on both sides',
      (t) => t.includes('Written offline by Ada. ') && t.includes('Written online by Bob. '))
    assert.ok(text.startsWith('Shared start. '), text)
    await screenshot(ada, 'offline-3-ada-reconnected')
    await screenshot(bob, 'offline-4-bob-after-merge')
  })

  browserTest('the connection indicator shows synced, pending, offline and synced again', async () => {
    const doc = docName('indicator')
    const ada = await person('Ada', '#1f77b4', doc)
    assert.deepEqual(await indicator(ada), { state: 'synced', pending: false, text: 'Synced: all changes saved' })
    await screenshot(ada, 'indicator-1-synced')

    // A relay that holds the connection but answers nothing: the edit stays pending, online.
    suite.relay.signal('SIGSTOP')
    await typeAtEnd(ada, 'typed while the relay is frozen')
    await waitForIndicator(ada, 'pending', true)
    assert.equal((await indicator(ada)).text, 'Online: saving changes…')
    await screenshot(ada, 'indicator-2-pending')
    suite.relay.signal('SIGCONT')
    await waitForIndicator(ada, 'synced', false)

    // Working offline by choice, with the keyboard: the button toggles and says what it does.
    const toggle = ada.page.getByRole('button', { name: 'Work offline' })
    await toggle.focus()
    await ada.page.keyboard.press('Enter')
    await waitForIndicator(ada, 'offline', false)
    assert.equal(await ada.page.locator('#offline-toggle').getAttribute('aria-pressed'), 'true')
    await typeAtEnd(ada, ' and offline')
    await waitForIndicator(ada, 'offline', true)
    assert.match((await indicator(ada)).text, /^Offline: working locally; your changes are kept/)
    await screenshot(ada, 'indicator-3-offline-pending')
    await ada.page.getByRole('button', { name: 'Reconnect' }).click()
    await waitForIndicator(ada, 'synced', false)
    await screenshot(ada, 'indicator-4-synced-again')

    // The relay has everything: a newcomer sees the whole text.
    const bob = await person('Bob', '#d62728', doc)
    assert.equal(await textOf(bob), 'typed while the relay is frozen and offline')
  })

  browserTest('documents are opened by name from the form; bad names are refused', async () => {
    const doc = docName('first')
    const ada = await person('Ada', '#1f77b4', doc)
    await typeAtEnd(ada, 'in the first document')
    await waitForIndicator(ada, 'synced', false)

    const nameField = ada.page.getByLabel('Document name')
    await nameField.fill('drafts/2024')
    await nameField.press('Enter')
    await waitForPage(ada, 'the form to refuse a name with a slash',
      () => document.getElementById('open-error').textContent.includes('/'))
    assert.equal(await nameField.getAttribute('aria-invalid'), 'true')
    assert.equal(new URL(ada.page.url()).searchParams.get('doc'), doc)
    await screenshot(ada, 'open-1-bad-name-refused')

    const other = `${doc} notes ✓`
    await nameField.fill(other)
    await Promise.all([ada.page.waitForURL((url) => url.searchParams.get('doc') === other), nameField.press('Enter')])
    await waitForIndicator(ada, 'synced', false)
    assert.equal(await ada.page.locator('#doc-name').textContent(), other)
    assert.equal(await textOf(ada), '', 'a new document starts empty')
    await typeAtEnd(ada, 'second')

    // Back to the first: its text is still there.
    await ada.page.goBack()
    await waitForIndicator(ada, 'synced', false)
    assert.equal(await textOf(ada), 'in the first document')

    // A bad name in the address is explained, and the default document opens instead.
    await ada.page.goto(`${suite.relay.url}/?doc=${encodeURIComponent('a\\b')}`)
    await waitForIndicator(ada, 'synced', false)
    assert.match(await ada.page.locator('#doc-notice').textContent(), /cannot contain \/ or \\/)
    assert.equal(await ada.page.locator('#doc-name').textContent(), 'welcome')
  })

  browserTest('the page works at phone width without sideways scrolling', async () => {
    const doc = docName('phone')
    const phone = await person('Ada', '#1f77b4', doc, { viewport: { width: 375, height: 740 } })
    const desk = await person('Bob', '#d62728', doc)
    await typeAtEnd(phone, 'Typed on a phone. ')
    await typeAtEnd(desk, 'Typed on a desk.')
    await waitForSameText([phone, desk], 'both edits', (t) => t.includes('phone') && t.includes('desk'))
    const widths = await phone.page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, view: innerWidth }))
    assert.ok(widths.scroll <= widths.view, `page is ${widths.scroll}px wide in a ${widths.view}px viewport`)
    const editorBox = await phone.page.locator('.cm-editor').boundingBox()
    assert.ok(editorBox.width >= 300, `editor is ${editorBox.width}px wide`)
    await screenshot(phone, 'phone-1-narrow-viewport')
    await screenshot(desk, 'phone-2-desk-view')
  })

  browserTest('the title is last-writer-wins: whoever sets it last, both see it', async () => {
    const doc = docName('title')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    const titleOf = (p) => waitForPage(p, 'the title panel to connect',
      () => !document.getElementById('title-form').hasAttribute('data-offline') &&
        document.getElementById('title-status').textContent !== '')
    await Promise.all([titleOf(ada), titleOf(bob)])

    await ada.page.getByLabel('Document title', { exact: true }).fill('Q3 plan')
    await ada.page.getByLabel('Document title', { exact: true }).press('Enter')
    await waitForPage(bob, 'Ada’s title', () => document.getElementById('title-input').value === 'Q3 plan',
      undefined, () => document.getElementById('title-input').value)
    assert.match(await bob.page.locator('#title-status').textContent(), /set by Ada/)

    await bob.page.getByLabel('Document title', { exact: true }).fill('Q4 plan')
    await bob.page.getByRole('button', { name: 'Set title' }).click()
    for (const p of [ada, bob]) {
      await waitForPage(p, 'Bob’s later title', () => document.getElementById('title-input').dataset.value === 'Q4 plan',
        undefined, () => document.getElementById('title-input').dataset.value)
    }
    assert.equal(await ada.page.getByLabel('Document title', { exact: true }).inputValue(), 'Q4 plan')
    await screenshot(ada, 'title-1-ada-sees-bobs-title')

    // The relay holds the winner: a newcomer sees it.
    const cleo = await person('Cleo', '#2ca02c', doc)
    await waitForPage(cleo, 'the stored title', () => document.getElementById('title-input').value === 'Q4 plan')
  })

  browserTest('notes saved by two people from the same version show a conflict; resolving it updates both', async () => {
    const doc = docName('notes')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    for (const p of [ada, bob]) {
      await waitForPage(p, 'the notes panel on version 0', () =>
        !document.getElementById('notes-form').hasAttribute('data-offline') &&
        document.getElementById('notes-input').dataset.version === '0')
    }
    // Both start from version 0 and write different notes.
    await ada.page.getByLabel('Notes', { exact: true }).fill('Ship on Monday.')
    await bob.page.getByLabel('Notes', { exact: true }).fill('Ship after the review.')
    await ada.page.getByRole('button', { name: 'Save notes' }).click()
    await waitForPage(ada, 'Ada’s save to make version 1', () => document.getElementById('notes-version').textContent === 'Version 1')
    // Bob is told, and keeps his unsaved text.
    await waitForPage(bob, 'Bob to learn of version 1', () => document.getElementById('notes-version').textContent.startsWith('Version 1'),
      undefined, () => document.getElementById('notes-version').textContent)
    assert.equal(await bob.page.getByLabel('Notes', { exact: true }).inputValue(), 'Ship after the review.')

    await bob.page.getByRole('button', { name: 'Save notes' }).click()
    const conflictShown = () => {
      const card = document.querySelector('#conflicts .conflict')
      if (!card || document.getElementById('conflicts').hidden) return null
      return [...card.querySelectorAll('.conflict-value')].map((el) => el.textContent)
    }
    for (const p of [ada, bob]) {
      const values = await waitForPage(p, 'the conflict with both values', conflictShown, undefined,
        () => document.getElementById('conflicts').innerHTML.slice(0, 300))
      assert.deepEqual(values, ['Ship on Monday.', 'Ship after the review.'], `${p.name} sees both values`)
    }
    assert.equal(await ada.page.locator('#notes-input').inputValue(), 'Ship on Monday.', 'a conflict changes nothing yet')
    await screenshot(ada, 'notes-1-ada-sees-the-conflict')
    await screenshot(bob, 'notes-2-bob-sees-the-conflict')

    // Ada resolves it with a merge, using the keyboard.
    const merged = ada.page.getByLabel('Or merge them')
    await merged.fill('Ship after the review, on Monday.')
    await ada.page.getByRole('button', { name: 'Save merged notes' }).focus()
    await ada.page.keyboard.press('Enter')
    for (const p of [ada, bob]) {
      await waitForPage(p, 'the merged notes and no conflict', () =>
        document.getElementById('conflicts').hidden &&
        document.getElementById('notes-input').value === 'Ship after the review, on Monday.',
      undefined, () => [document.getElementById('notes-input').value, document.getElementById('conflicts').hidden])
    }
    await screenshot(bob, 'notes-3-bob-after-resolution')

    // The relay kept the resolution: a newcomer sees it and no open conflict.
    const cleo = await person('Cleo', '#2ca02c', doc)
    await waitForPage(cleo, 'the resolved notes', () =>
      document.getElementById('notes-input').value === 'Ship after the review, on Monday.')
    assert.equal(await cleo.page.locator('#conflicts .conflict').count(), 0)
  })
})
