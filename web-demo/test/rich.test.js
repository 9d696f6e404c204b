// The page's default editor: rich text (ProseMirror + y-prosemirror on the stock y-websocket
// provider, a Y.XmlFragment), in real Chromium against the real relay. Every screenshot is also
// an axe-core check (harness.screenshot).

import assert from 'node:assert/strict'
import { describe } from 'node:test'

import {
  assertAccessible, browserSuite, docName, screenshot, waitForIndicator, waitForPage
} from './harness.js'
import { PALETTE } from '../src/identity.js'

const suite = browserSuite({ personDefaults: { mode: 'rich' }, timeoutMs: 120_000 })
const { person, browserTest } = suite

/** The Y.XmlFragment as XML, checked to match what ProseMirror shows. */
async function xmlOf (p) {
  return p.page.evaluate(() => window.aetherflowDemo.fragment.toString())
}

/** Waits until every person's fragment satisfies `check` and all are equal. */
async function waitForSameXml (people, what, check) {
  const deadline = Date.now() + 20_000
  let xml = []
  for (;;) {
    xml = await Promise.all(people.map(xmlOf))
    if (xml.every((x) => x === xml[0] && check(x))) return xml[0]
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${people.map((p, i) => `${p.name}=${xml[i]}`).join('\n')}`)
    await people[0].page.waitForTimeout(50) // a poll interval, not a synchronisation
  }
}

/** Puts the caret at the end of the rich text. */
async function caretAtEnd (p) {
  await p.page.locator('.ProseMirror').click()
  await p.page.keyboard.press('Control+End')
}

/** The relay's JSON view of the document (`GET /api/v1/docs/{name}/content`). */
async function relayContent (doc) {
  const response = await fetch(`${suite.relay.url}/api/v1/docs/${encodeURIComponent(doc)}/content`)
  assert.equal(response.status, 200)
  return JSON.stringify((await response.json()).content.prosemirror)
}

describe('rich text', () => {
  browserTest('headings, lists, bold, italic and links converge across two browsers and reach the relay', async () => {
    const doc = docName('rich')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)

    // Ada: a heading by shortcut, a paragraph with bold (toolbar) and italic (keyboard).
    await caretAtEnd(ada)
    await ada.page.keyboard.type('# Plan')
    await ada.page.keyboard.press('Enter')
    await ada.page.keyboard.type('We ship ')
    await ada.page.getByRole('button', { name: 'Bold' }).click()
    await ada.page.keyboard.type('on Monday')
    await ada.page.getByRole('button', { name: 'Bold' }).click()
    await ada.page.keyboard.press('Control+i')
    await ada.page.keyboard.type(' probably')
    await ada.page.keyboard.press('Control+i')
    // Bob, meanwhile: a bullet list at the end, then a link on a word.
    await waitForSameXml([ada, bob], 'Ada’s paragraph at Bob’s', (x) => x.includes('probably'))
    await caretAtEnd(bob)
    await bob.page.keyboard.press('Enter')
    await bob.page.keyboard.type('- review')
    await bob.page.keyboard.press('Enter')
    await bob.page.keyboard.type('docs')
    await bob.page.keyboard.press('Shift+Home')
    await bob.page.getByRole('button', { name: 'Link', exact: true }).click()
    await bob.page.getByLabel('Link address').fill('https://example.com/docs')
    await screenshot(bob, 'rich-1-bob-link-form')
    await bob.page.getByRole('button', { name: 'Apply link' }).click()

    const xml = await waitForSameXml([ada, bob], 'the same rich text on both sides', (x) => x.includes('https://example.com/docs'))
    assert.match(xml, /^<heading level="1">Plan<\/heading>/)
    assert.match(xml, /<strong>on Monday<\/strong>/)
    assert.match(xml, /<em> probably<\/em>/)
    assert.match(xml, /<bullet_list><list_item><paragraph>review<\/paragraph><\/list_item><list_item><paragraph><link href="https:\/\/example.com\/docs"[^>]*>docs<\/link>/)
    // What each browser shows, not only what its Y.Doc holds.
    for (const p of [ada, bob]) {
      assert.equal(await p.page.locator('.ProseMirror h1').textContent(), 'Plan')
      assert.equal(await p.page.locator('.ProseMirror strong').textContent(), 'on Monday')
      assert.equal(await p.page.locator('.ProseMirror li a').getAttribute('href'), 'https://example.com/docs')
    }
    await screenshot(ada, 'rich-2-ada-converged')
    await screenshot(bob, 'rich-3-bob-converged')

    // The relay holds the Y.XmlFragment: its content API shows the same structure.
    await waitForIndicator(ada, 'synced', false)
    await waitForIndicator(bob, 'synced', false)
    const stored = await relayContent(doc)
    for (const part of ['<heading level=\\"1\\">Plan</heading>', '<strong>on Monday</strong>', '<bullet_list>', 'https://example.com/docs']) {
      assert.ok(stored.includes(part), `the relay's content has ${part}: ${stored}`)
    }

    // A newcomer gets it all from the suite.relay.
    const cleo = await person('Cleo', '#2e7d32', doc)
    assert.equal(await xmlOf(cleo), xml)
  })

  browserTest('offline rich-text edits survive a reload and merge on reconnect', async () => {
    const doc = docName('rich-offline')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    await caretAtEnd(ada)
    await ada.page.keyboard.type('Shared line')
    await waitForSameXml([ada, bob], 'the shared line', (x) => x.includes('Shared line'))

    await ada.page.getByRole('button', { name: 'Work offline' }).click()
    await waitForIndicator(ada, 'offline', false)
    await caretAtEnd(ada)
    await ada.page.keyboard.press('Enter')
    await ada.page.keyboard.type('## Offline heading')
    await caretAtEnd(bob)
    await bob.page.keyboard.press('Enter')
    await bob.page.keyboard.type('Online meanwhile')
    await waitForIndicator(ada, 'offline', true)
    await screenshot(ada, 'rich-4-offline-with-edits')
    await waitForPage(ada, 'the text stored in this browser', () => window.aetherflowDemo.persistence?.synced === true)

    await ada.page.reload()
    await waitForPage(ada, 'the offline heading back after the reload', () =>
      document.querySelector('.ProseMirror h2')?.textContent === 'Offline heading', undefined,
    () => document.querySelector('.ProseMirror')?.innerHTML.slice(0, 300))
    await waitForIndicator(ada, 'synced', false)
    const xml = await waitForSameXml([ada, bob], 'both edits on both sides',
      (x) => x.includes('<heading level="2">Offline heading</heading>') && x.includes('Online meanwhile'))
    assert.ok(xml.startsWith('<paragraph>Shared line</paragraph>'), xml)
    await screenshot(bob, 'rich-5-bob-after-merge')
    assert.ok((await relayContent(doc)).includes('Offline heading'))
  })

  browserTest('the first screen: sample once for two newcomers, share controls, sticky header, conflict banner', async () => {
    // Two people open the welcome document at the same time: the sample appears once.
    const [ada, bob] = await Promise.all([person('Ada', '#1f77b4', 'welcome'), person('Bob', '#d62728', 'welcome')])
    const xml = await waitForSameXml([ada, bob], 'the sample', (x) => x.includes('Welcome to AetherFlow'))
    assert.equal(xml.split('Welcome to AetherFlow').length, 2, 'one sample heading')
    await screenshot(ada, 'first-1-welcome')

    // Open a second window: a new page of the same document, synced.
    const [popup] = await Promise.all([ada.context.waitForEvent('page'), ada.page.getByRole('button', { name: 'Open a second window' }).click()])
    const second = { name: 'Ada (window 2)', page: popup, context: ada.context, errors: [] }
    await waitForIndicator(second, 'synced', false)
    assert.equal(new URL(popup.url()).searchParams.get('doc'), 'welcome')
    await popup.close()
    await ada.page.getByRole('button', { name: 'Copy link' }).click()
    await waitForPage(ada, 'the copy to be confirmed or the link shown', () =>
      document.getElementById('share-status').textContent !== '')

    // A long document: the header with status and people stays in view.
    await caretAtEnd(ada)
    for (let i = 0; i < 40; i++) await ada.page.keyboard.press('Enter')
    await ada.page.keyboard.type('far below')
    const header = await ada.page.locator('.topbar').boundingBox()
    assert.ok(header && header.y >= 0 && header.y < 5, `header at ${header?.y}`)
    assert.ok(await ada.page.locator('#status').isVisible())
    await waitForPage(ada, 'two avatars once the second window closed', () => document.querySelectorAll('#avatars .avatar').length === 2)

    // Deleting the sample: it does not come back for a newcomer.
    await ada.page.locator('.ProseMirror').click()
    await ada.page.keyboard.press('Control+a')
    await ada.page.keyboard.press('Delete')
    await waitForSameXml([ada, bob], 'an empty document', (x) => !x.includes('Welcome'))
    await waitForIndicator(ada, 'synced', false)
    const cleo = await person('Cleo', '#2e7d32', 'welcome')
    await cleo.page.waitForFunction(() => window.aetherflowDemo.provider.synced)
    assert.ok(!(await xmlOf(cleo)).includes('Welcome'), 'the deleted sample stays deleted')

    // A conflict on the notes shows a banner at the top; its link leads to the choice.
    for (const [p, notes] of [[ada, 'A'], [bob, 'B']]) {
      await waitForPage(p, 'the notes panel', () => !document.getElementById('notes-form').hasAttribute('data-offline') &&
        document.getElementById('notes-input').dataset.version !== undefined)
      await p.page.getByLabel('Notes', { exact: true }).fill(notes)
    }
    await ada.page.getByRole('button', { name: 'Save notes' }).click()
    await waitForPage(bob, 'version 1', () => document.getElementById('notes-version').textContent.startsWith('Version 1'))
    await bob.page.getByRole('button', { name: 'Save notes' }).click()
    await waitForPage(ada, 'the banner', () => !document.getElementById('conflict-banner').hidden)
    await ada.page.evaluate(() => window.scrollTo(0, 0))
    const banner = await ada.page.locator('#conflict-banner').boundingBox()
    assert.ok(banner && banner.y < 200, `banner at ${banner?.y}`)
    await screenshot(ada, 'first-2-conflict-banner')
    await ada.page.getByRole('link', { name: 'Choose what to keep' }).click()
    assert.match(await ada.page.evaluate(() => document.activeElement.textContent), /^Keep /)
  })

  browserTest('remote cursors of every palette colour are readable, and pass axe', async () => {
    const doc = docName('rich-cursors')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    await caretAtEnd(ada)
    await ada.page.keyboard.type('First line')
    await ada.page.keyboard.press('Enter')
    await ada.page.keyboard.type('Second line')
    for (const color of [...PALETTE, '#ffff00']) {
      await bob.page.evaluate((c) => {
        const input = document.getElementById('user-color')
        input.value = c
        input.dispatchEvent(new Event('input', { bubbles: true }))
      }, color)
      await caretAtEnd(bob)
      const published = await bob.page.evaluate(() => window.aetherflowDemo.awareness.getLocalState().user.color)
      await waitForPage(ada, `Bob's label in ${published}`, (c) => {
        const el = document.querySelector('.ProseMirror .remote-label')
        return el && el.textContent === 'Bob' && el.style.backgroundColor !== '' &&
          getComputedStyle(el).backgroundColor === (() => { const d = document.createElement('div'); d.style.color = c; document.body.append(d); const v = getComputedStyle(d).color; d.remove(); return v })()
      }, published, () => document.querySelector('.ProseMirror .remote-label')?.outerHTML)
      await assertAccessible(ada, `rich-text caret label of ${color}`)
    }
    // Bob's caret is on the second line: his label sits in the gap between the lines and does
    // not cover the first line's text.
    const overlap = await ada.page.evaluate(() => {
      const label = document.querySelector('.ProseMirror .remote-label').getBoundingClientRect()
      const range = document.createRange()
      range.selectNodeContents(document.querySelector('.ProseMirror p'))
      const text = range.getBoundingClientRect()
      return { labelTop: label.top, textBottom: text.bottom }
    })
    assert.ok(overlap.labelTop >= overlap.textBottom - 1, `label top ${overlap.labelTop} above the first line's bottom ${overlap.textBottom}`)
    await screenshot(ada, 'rich-6-remote-cursor')
  })

  browserTest('at phone width: no sideways scrolling, status and people in view, toolbar usable', async () => {
    const doc = docName('rich-phone')
    const phone = await person('Ada', '#1f77b4', doc, { viewport: { width: 375, height: 740 } })
    const desk = await person('Bob', '#d62728', doc)
    await caretAtEnd(phone)
    await phone.page.keyboard.type('From a phone')
    await phone.page.getByRole('button', { name: 'Heading 1' }).click()
    await waitForSameXml([phone, desk], 'the phone’s heading', (x) => x.includes('<heading level="1">From a phone</heading>'))
    const widths = await phone.page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, view: innerWidth }))
    assert.ok(widths.scroll <= widths.view, `page is ${widths.scroll}px wide in a ${widths.view}px viewport`)
    for (const sel of ['#status', '#avatars']) {
      const box = await phone.page.locator(sel).boundingBox()
      assert.ok(box && box.y + box.height <= 740, `${sel} in the first screen (at ${box?.y})`)
    }
    await screenshot(phone, 'rich-7-phone')
  })
})
