// The history panel (issue 18) in real Chromium against the real relay with auth on: people
// with tokens of different subjects make versions (a version ends where another person's
// changes begin, or at a name), look at older ones with their changes marked by author, name
// one, and restore one; every page on the document then shows the restored text. A read-only
// token browses but is offered neither restore nor naming.

import assert from 'node:assert/strict'
import { describe } from 'node:test'

import * as Y from 'yjs'

import {
  browserSuite, docName, mintToken, screenshot, typeAtEnd, waitForIndicator, waitForPage, waitForSameText
} from './harness.js'

const SECRET = 'history-browser-test-secret-0123'
const suite = browserSuite({ relayArgs: ['--jwt-secret', SECRET], timeoutMs: 150_000 })
const { person, browserTest } = suite

/** A token for `sub` on `doc` (and its title and notes documents). */
function token (sub, doc, perm = 'write') {
  return mintToken(SECRET, { sub, docs: [`${doc}*`], perm, exp: Math.floor(Date.now() / 1000) + 3600 })
}

/** Opens the history panel. */
async function openHistory (p) {
  await p.page.getByRole('button', { name: 'History', exact: true }).click()
  await waitForPage(p, 'the history panel to open', () => !document.getElementById('history-panel').hidden)
}

/** The versions the panel lists, newest first: id, authors and name. */
function listed (p) {
  return p.page.evaluate(() => [...document.querySelectorAll('#history-list .history-version')].map((button) => ({
    id: Number(button.dataset.version),
    authors: button.querySelector('.history-names').textContent,
    label: button.querySelector('.history-label')?.textContent ?? null
  })))
}

/** Waits until the list's authors, newest first, are `authors`; returns the rows. */
async function waitForVersions (p, authors) {
  await waitForPage(p, `versions by ${authors.join(', ')}`,
    (want) => JSON.stringify([...document.querySelectorAll('#history-list .history-names')].map((el) => el.textContent)) === want,
    JSON.stringify(authors),
    () => [document.getElementById('history-status').textContent, document.getElementById('history-problem').textContent,
      [...document.querySelectorAll('#history-list .history-names')].map((el) => el.textContent)])
  return listed(p)
}

/**
 * The preview as shown: the text at the version (without its struck-through deletions), the
 * insertions and deletions with their author and colour, and the legend.
 */
function preview (p) {
  return p.page.evaluate(() => {
    const box = document.getElementById('history-text')
    const marked = (tag) => [...box.querySelectorAll(tag)].map((el) => ({
      author: el.dataset.author, text: el.textContent, color: el.style.getPropertyValue('--author')
    }))
    return {
      heading: document.getElementById('history-preview-heading').textContent,
      text: [...box.childNodes].filter((n) => n.nodeName !== 'DEL').map((n) => n.textContent).join(''),
      inserted: marked('ins'),
      deleted: marked('del'),
      legend: [...document.querySelectorAll('#history-legend li')].map((li) => ({
        name: li.textContent, color: li.querySelector('.history-dot').style.backgroundColor
      }))
    }
  })
}

/** Picks version `id` in the list and waits until its preview shows `text`. */
async function previewVersion (p, id, text) {
  await p.page.locator(`#history-list [data-version="${id}"]`).click()
  await waitForPage(p, `the preview of version ${id} to show ${JSON.stringify(text)}`, ([id, text]) => {
    const box = document.getElementById('history-text')
    const shown = [...box.childNodes].filter((n) => n.nodeName !== 'DEL').map((n) => n.textContent).join('')
    return document.getElementById('history-preview-heading').textContent.startsWith(`Version ${id}`) && shown === text
  }, [id, text], () => [document.getElementById('history-preview-heading').textContent,
    document.getElementById('history-text').textContent, document.getElementById('history-preview-note').textContent])
  return preview(p)
}

/** `rgb(r, g, b)` as `#rrggbb`. */
function hex (rgb) {
  return '#' + rgb.match(/\d+/g).map((v) => Number(v).toString(16).padStart(2, '0')).join('')
}

describe('the history panel', () => {
  browserTest('versions by two people: preview with changes by author, name one, restore an older one everywhere', async () => {
    const doc = docName('history')
    const ada = await person('Ada', '#1f77b4', doc, { token: token('ada', doc) })
    await typeAtEnd(ada, 'Hello from Ada.')
    await waitForIndicator(ada, 'synced', false)
    const bob = await person('Bob', '#d62728', doc, { token: token('bob', doc) })
    await typeAtEnd(bob, ' Bob was here.')
    await waitForSameText([ada, bob], 'Bob’s sentence at Ada’s', (t) => t === 'Hello from Ada. Bob was here.')
    await waitForIndicator(bob, 'synced', false)
    await typeAtEnd(ada, ' Ada again.')
    const latest = 'Hello from Ada. Bob was here. Ada again.'
    await waitForSameText([ada, bob], 'Ada’s second sentence at Bob’s', (t) => t === latest)
    await waitForIndicator(ada, 'synced', false)

    // Three versions, newest first: a version ends where another person's changes begin.
    await openHistory(ada)
    await openHistory(bob)
    const [newest, bobs, first] = await waitForVersions(ada, ['ada', 'bob', 'ada'])
    await waitForVersions(bob, ['ada', 'bob', 'ada'])
    assert.ok(newest.id > bobs.id && bobs.id > first.id, 'ids grow with time')

    // Bob's version: the text then, his sentence marked as his, in his legend colour.
    const middle = await previewVersion(ada, bobs.id, 'Hello from Ada. Bob was here.')
    assert.deepEqual(middle.inserted.map(({ author, text }) => ({ author, text })), [{ author: 'bob', text: ' Bob was here.' }])
    assert.deepEqual(middle.deleted, [])
    assert.deepEqual(middle.legend.map((l) => l.name), ['bob'])
    assert.equal(hex(middle.legend[0].color), middle.inserted[0].color, 'the mark has the legend’s colour')
    await screenshot(ada, 'history-1-bobs-version')

    // The first version: everything in it was written by Ada, in another colour.
    const oldest = await previewVersion(ada, first.id, 'Hello from Ada.')
    assert.deepEqual(oldest.inserted.map(({ author, text }) => ({ author, text })), [{ author: 'ada', text: 'Hello from Ada.' }])
    assert.notEqual(oldest.inserted[0].color, middle.inserted[0].color)

    // Name Bob's version: the name shows in both people's lists (Bob's through the relay's
    // events), and the row Bob's keyboard is on keeps the focus through the reload.
    await bob.page.locator(`#history-list [data-version="${bobs.id}"]`).focus()
    await ada.page.locator(`#history-list [data-version="${bobs.id}"]`).click()
    await ada.page.getByLabel('Version name').fill('Bob’s draft')
    await ada.page.getByRole('button', { name: 'Name this version' }).click()
    for (const p of [ada, bob]) {
      await waitForPage(p, 'the name in the list', (id) =>
        document.querySelector(`#history-list [data-version="${id}"] .history-label`)?.textContent === 'Bob’s draft', bobs.id)
    }
    assert.match(await ada.page.locator('#history-action-status').textContent(), /named “Bob’s draft”/)
    assert.equal(await bob.page.evaluate(() => document.activeElement?.dataset.version), String(bobs.id))
    await screenshot(bob, 'history-2-named-at-bob')

    // A name the relay refuses (over 200 bytes): its reason is shown, the old name stays.
    await ada.page.getByLabel('Version name').fill('📝'.repeat(60))
    await ada.page.getByRole('button', { name: 'Name this version' }).click()
    await waitForPage(ada, 'the refusal', () =>
      /Not named: The relay refused: .*a label is 1 to 200 bytes/.test(document.getElementById('history-action-status').textContent),
    undefined, () => document.getElementById('history-action-status').textContent)
    assert.deepEqual((await listed(ada)).map((v) => v.label), [null, 'Bob’s draft', null])
    const refused = ada.errors.findIndex((e) => /status of 400/.test(e))
    assert.ok(refused >= 0, `the browser reported the refused request: ${ada.errors}`)
    ada.errors.splice(refused, 1)

    // Removing the name takes it off both lists.
    await ada.page.getByRole('button', { name: 'Remove name' }).click()
    for (const p of [ada, bob]) {
      await waitForPage(p, 'the name gone from the list', () =>
        document.querySelectorAll('#history-list .history-label').length === 0)
    }
    assert.deepEqual((await listed(bob)).map((v) => v.authors), ['ada', 'bob', 'ada'], 'Bob’s version stays his')

    // Restore the first version: both editors show its text through the ordinary sync.
    await ada.page.locator(`#history-list [data-version="${first.id}"]`).click()
    await ada.page.getByRole('button', { name: 'Restore this version' }).click()
    await waitForSameText([ada, bob], 'the restored text in both editors', (t) => t === 'Hello from Ada.')
    await waitForPage(ada, 'the restore’s outcome', (id) =>
      document.getElementById('history-action-status').textContent === `Restored version ${id} for everyone; the editor shows it.`, first.id)
    // The restore is a new change by Ada: the newest version now takes the other sentences out.
    await waitForPage(bob, 'the newest version to include the restore', (id) =>
      Number(document.querySelector('#history-list .history-version')?.dataset.version) > id, newest.id)
    const [grown] = await listed(bob)
    const after = await previewVersion(bob, grown.id, 'Hello from Ada.')
    assert.deepEqual(after.deleted.map((d) => d.author), ['ada'], 'deleted by the restore, credited to Ada')
    assert.match(after.deleted[0].text, /Bob was here\./)
    await screenshot(bob, 'history-3-after-restore')
  })

  browserTest('rich text: a named version previewed as rich text and restored in both editors', async () => {
    const doc = docName('history-rich')
    const ada = await person('Ada', '#1f77b4', doc, { token: token('ada', doc), mode: 'rich' })
    const bob = await person('Bob', '#d62728', doc, { token: token('bob', doc), mode: 'rich' })
    await ada.page.locator('.ProseMirror').click()
    await ada.page.keyboard.type('First draft.')
    await waitForIndicator(ada, 'synced', false)
    await openHistory(ada)
    const [draft] = await waitForVersions(ada, ['ada'])
    // A name ends its version: what Ada types next is a new one.
    await ada.page.locator(`#history-list [data-version="${draft.id}"]`).click()
    await ada.page.getByLabel('Version name').fill('draft 1')
    await ada.page.getByRole('button', { name: 'Name this version' }).click()
    await waitForPage(ada, 'the name in the list', () =>
      document.querySelector('#history-list .history-label')?.textContent === 'draft 1')
    await ada.page.locator('.ProseMirror').click()
    await ada.page.keyboard.press('Control+End')
    await ada.page.keyboard.press('Enter')
    await ada.page.keyboard.type('Second thought.')
    await waitForIndicator(ada, 'synced', false)
    const [, named] = await waitForVersions(ada, ['ada', 'ada'])
    assert.equal(named.label, 'draft 1')

    await ada.page.locator(`#history-list [data-version="${named.id}"]`).click()
    await waitForPage(ada, 'the rich preview of the named version', () =>
      JSON.stringify([...document.querySelectorAll('#history-text p')].map((p) => p.textContent)) === '["First draft."]',
    undefined, () => document.getElementById('history-text').innerHTML)
    assert.deepEqual((await preview(ada)).legend.map((l) => l.name), ['ada'])
    await screenshot(ada, 'history-5-rich-preview')

    await ada.page.getByRole('button', { name: 'Restore this version' }).click()
    for (const p of [ada, bob]) {
      await waitForPage(p, 'the restored rich text in the editor', () =>
        JSON.stringify([...document.querySelectorAll('#editor .ProseMirror p')].map((p) => p.textContent)) === '["First draft."]',
      undefined, () => document.querySelector('#editor .ProseMirror').innerHTML)
    }
  })

  browserTest('older versions come a page at a time, and the oldest previews against the one before it', async () => {
    // 23 versions written over HTTP, each ended by a name (an update sent over HTTP has no
    // author: all are `anonymous`), so the panel's first page (20) leaves three for "Older
    // versions".
    const doc = docName('history-pages')
    const api = `${suite.relay.url}/api/v1/docs/${encodeURIComponent(doc)}`
    const headers = { authorization: `Bearer ${token('ada', doc)}` }
    const writer = new Y.Doc()
    const text = writer.getText('content')
    for (let i = 1; i <= 23; i++) {
      const before = Y.encodeStateVector(writer)
      text.insert(text.length, `${i}.`)
      const sent = await fetch(`${api}/update`, { method: 'POST', headers, body: Y.encodeStateAsUpdate(writer, before) })
      assert.equal(sent.status, 204, await sent.text())
      const [newest] = (await (await fetch(`${api}/history?limit=1`, { headers })).json()).versions
      const named = await fetch(`${api}/history/${newest.id}/label`, {
        method: 'PUT', headers: { ...headers, 'content-type': 'application/json' }, body: JSON.stringify({ label: `v${i}` })
      })
      assert.equal(named.status, 200, await named.text())
    }
    const cy = await person('Cy', '#4a148c', doc, { token: token('cy', doc) })
    await openHistory(cy)
    await waitForPage(cy, 'the first page', () =>
      document.querySelectorAll('#history-list .history-version').length === 20 && !document.getElementById('history-older').hidden,
    undefined, () => [document.getElementById('history-status').textContent, document.getElementById('history-problem').textContent,
      [...document.querySelectorAll('#history-list .history-names')].map((el) => el.textContent)])
    // The oldest of the first page is diffed against the newest of the next one, fetched for it.
    const firstPage = await listed(cy)
    const twentieth = await previewVersion(cy, firstPage[19].id, '1.2.3.4.')
    assert.deepEqual(twentieth.inserted.map(({ author, text }) => ({ author, text })), [{ author: 'anonymous', text: '4.' }])
    await cy.page.getByRole('button', { name: 'Older versions' }).click()
    await waitForPage(cy, 'all 23 versions', () =>
      document.querySelectorAll('#history-list .history-version').length === 23 && document.getElementById('history-older').hidden)
    const rows = await listed(cy)
    assert.deepEqual(rows.map((r) => r.label), Array.from({ length: 23 }, (_, i) => `v${23 - i}`))
    const oldest = await previewVersion(cy, rows[22].id, '1.')
    assert.deepEqual(oldest.inserted.map(({ author, text }) => ({ author, text })), [{ author: 'anonymous', text: '1.' }])
  })

  browserTest('a read-only token browses versions but is offered neither restore nor naming', async () => {
    const doc = docName('history-read')
    const ada = await person('Ada', '#1f77b4', doc, { token: token('ada', doc) })
    await typeAtEnd(ada, 'Only Ada writes here.')
    await waitForIndicator(ada, 'synced', false)
    const cy = await person('Cy', '#4a148c', doc, { token: token('cy', doc, 'read') })
    await openHistory(cy)
    const [version] = await waitForVersions(cy, ['ada'])
    const shown = await previewVersion(cy, version.id, 'Only Ada writes here.')
    assert.deepEqual(shown.inserted.map((i) => i.author), ['ada'])
    assert.equal(await cy.page.getByRole('button', { name: 'Restore this version' }).count(), 0)
    assert.equal(await cy.page.getByRole('button', { name: 'Name this version' }).count(), 0)
    assert.ok(await cy.page.getByText('Your token is read-only').isVisible())
    await screenshot(cy, 'history-4-read-only')
    // What Cy's page reports beyond that comes from the title and notes panels, which a read
    // token may not create (each a 403): not the history panel.
    cy.errors.splice(0, cy.errors.length, ...cy.errors.filter((e) => !/status of 403/.test(e)))
  })
})
