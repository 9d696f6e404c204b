// Real Tiptap editors (@tiptap/core + starter-kit + collaboration + collaboration-caret) on the
// stock @hocuspocus/provider, in headless Chromium, against the relay's /hocuspocus endpoint:
// two people typing with formatting, a y-websocket client on the same document, several
// documents over one provider socket, a read-only token, a late joiner, and kill -9 with a
// restart. The page is test/tiptap/page.js, bundled and served by test/tiptap/serve.js (not part
// of the demo's bundle).

import assert from 'node:assert/strict'
import { after, before, describe } from 'node:test'

import { browserSuite, docName, mintToken, screenshot, startRelay, waitForPage, TIMEOUT_MS } from './harness.js'
import { serveTiptapPage } from './tiptap/serve.js'

const suite = browserSuite({ timeoutMs: 120_000 })
const { browserTest } = suite
const SECRET = 'tiptap-test-secret-0123456789abcdef'
// Dark enough for the white caret labels to pass axe-core's contrast check.
const ADA = ['Ada', '#1b5e9e']
const BOB = ['Bob', '#b71c1c']
const CLEO = ['Cleo', '#1b5e20']

let pageServer
before(async () => { pageServer = await serveTiptapPage() })
after(async () => { await pageServer?.close() })

/**
 * Opens the Tiptap page for `name` in a fresh browser context with one editor per document of
 * `docs` on `relay`, and waits until each has synced (or been refused, with `expectAuth`).
 * The person records the WebSockets the page opened.
 */
async function tiptap (relay, [name, color], docs, { token, expectAuth = 'authenticated', client } = {}) {
  const context = await suite.browser.newContext({ viewport: { width: 1000, height: 700 } })
  const page = await context.newPage()
  const person = { name, context, page, errors: [], sockets: [] }
  suite.open.push(person)
  page.on('pageerror', (err) => person.errors.push(err.message))
  page.on('console', (msg) => { if (msg.type() === 'error') person.errors.push(msg.text()) })
  page.on('websocket', (ws) => person.sockets.push(ws.url()))
  const params = { relay: relay.url, docs: docs.join(','), name, color }
  if (token) params.token = token
  if (client) params.client = client
  await page.goto(pageServer.url(params))
  for (const doc of docs) {
    if (client) {
      await waitForPage(person, `${doc} to sync over y-websocket`, (doc) =>
        document.querySelector(`section[data-doc="${doc}"] .status`)?.dataset.synced === 'true', doc)
    } else if (expectAuth === 'refused') {
      await waitForStatus(person, doc, 'auth', 'refused')
    } else {
      await waitForStatus(person, doc, 'auth', expectAuth)
      await waitForStatus(person, doc, 'synced', 'true')
    }
  }
  return person
}

/** Waits until the status line of `doc` on the person's page has `data-<key>="<value>"`. */
function waitForStatus (person, doc, key, value) {
  return waitForPage(person, `${doc}'s status to show ${key}=${value}`, ([doc, key, value]) =>
    document.querySelector(`section[data-doc="${doc}"] .status`)?.dataset[key] === value, [doc, key, value],
  () => [...document.querySelectorAll('.status')].map((s) => s.textContent))
}

/** Waits until the relay has acknowledged every change the person made to `doc` as saved. */
async function saved (person, doc) {
  await waitForStatus(person, doc, 'synced', 'true')
  await waitForStatus(person, doc, 'unsaved', '0')
}

/** The HTML of the editor of `doc`, as Tiptap serialises it. */
function htmlOf (person, doc) {
  return person.page.evaluate((doc) => window.tiptapTest.docs[doc].editor.getHTML(), doc)
}

/** Waits until every person's editor of `doc` holds the same HTML and it satisfies `check`. */
async function waitForSameHtml (people, doc, what, check = () => true) {
  const deadline = Date.now() + TIMEOUT_MS
  let html = []
  for (;;) {
    html = await Promise.all(people.map((p) => htmlOf(p, doc)))
    if (html.every((h) => h === html[0] && check(h))) return html[0]
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}: ${people.map((p, i) => `${p.name}=${html[i]}`).join('\n')}`)
    }
    await people[0].page.waitForTimeout(50) // a poll interval, not a synchronisation
  }
}

/** Puts the caret at the end of the editor of `doc` (or of its `nth` paragraph). */
async function caretAt (person, doc, nth) {
  const editor = person.page.locator(`section[data-doc="${doc}"] .tiptap`)
  if (nth === undefined) {
    await editor.click()
    await person.page.keyboard.press('Control+End')
  } else {
    await editor.locator('p').nth(nth).click()
    await person.page.keyboard.press('End')
  }
}

/**
 * Selects the last occurrence of `text` in the editor of `doc` (as a person would with the
 * mouse), through the editor's own command: keyboard selection next to a remote caret's widget
 * moves by one step less than the keys pressed.
 */
async function select (person, doc, text) {
  const selected = await person.page.evaluate(([doc, text]) => {
    const { editor } = window.tiptapTest.docs[doc]
    let from = -1
    editor.state.doc.descendants((node, pos) => {
      const at = node.isText ? node.text.lastIndexOf(text) : -1
      if (at >= 0) from = pos + at
    })
    if (from < 0) return ''
    editor.chain().focus().setTextSelection({ from, to: from + text.length }).run()
    return editor.state.doc.textBetween(editor.state.selection.from, editor.state.selection.to)
  }, [doc, text])
  assert.equal(selected, text, `${person.name} selected the text`)
}

/** The text of the elements matching `selector` in the editor of `doc`, without the carets' labels. */
function shownText (person, doc, selector) {
  return person.page.evaluate(([doc, selector]) =>
    [...document.querySelectorAll(`section[data-doc="${doc}"] .tiptap ${selector}`)].map((el) => {
      const copy = el.cloneNode(true)
      for (const caret of copy.querySelectorAll('.collaboration-carets__caret')) caret.remove()
      return copy.textContent
    }), [doc, selector])
}

/** The Y.XmlFragment Tiptap writes, as the y-websocket page holds it. */
function fragmentOf (person) {
  return person.page.evaluate(() => window.tiptapTest.fragment.toString())
}

/** Runs `fn` with a relay of its own (`args`), printing its logs on failure and stopping it. */
async function withRelay (args, fn) {
  const relays = [await startRelay(args)]
  try {
    await fn(relays)
  } catch (err) {
    for (const r of relays) console.error(r.logs())
    throw err
  } finally {
    await Promise.all(suite.open.map((p) => p.context.close().catch(() => {})))
    await relays.at(-1).stop()
  }
}

describe('Tiptap over the Hocuspocus endpoint', () => {
  browserTest('two Tiptap editors typing at once converge with bold and a list; a y-websocket client and a late joiner see it all', async () => {
    const doc = docName('tiptap')
    const ada = await tiptap(suite.relay, ADA, [doc])
    const bob = await tiptap(suite.relay, BOB, [doc])
    await caretAt(ada, doc)
    await ada.page.keyboard.type('Top')
    await ada.page.keyboard.press('Enter')
    await ada.page.keyboard.type('Bottom')
    await waitForSameHtml([ada, bob], doc, 'Ada’s two paragraphs at Bob’s', (h) => h === '<p>Top</p><p>Bottom</p>')

    // Both type at once: Ada a bold phrase in the first paragraph, Bob a list at the end.
    await caretAt(ada, doc, 0)
    await caretAt(bob, doc)
    await Promise.all([
      (async () => {
        // Bold on a selection: a remote change arriving between Ctrl+B and the next key would
        // drop a pending stored mark (y-prosemirror replaces the editor's document).
        await ada.page.keyboard.type(' with strong words')
        await select(ada, doc, 'strong words')
        await ada.page.keyboard.press('Control+b')
      })(),
      (async () => {
        await bob.page.keyboard.press('Enter')
        await bob.page.keyboard.type('- first item')
        await bob.page.keyboard.press('Enter')
        await bob.page.keyboard.type('second item')
      })()
    ])
    const expected = '<p>Top with <strong>strong words</strong></p><p>Bottom</p>' +
      '<ul><li><p>first item</p></li><li><p>second item</p></li></ul>'
    await waitForSameHtml([ada, bob], doc, 'both people’s edits on both pages', (h) => h === expected)
    // What each page shows, not only what its editor state holds.
    for (const p of [ada, bob]) {
      assert.deepEqual(await shownText(p, doc, 'strong'), ['strong words'])
      assert.deepEqual(await shownText(p, doc, 'ul > li'), ['first item', 'second item'])
    }
    // Presence: each page shows the other's caret with their name.
    await waitForPage(ada, 'Bob’s caret', () =>
      [...document.querySelectorAll('.collaboration-carets__label')].some((l) => l.textContent === 'Bob'))
    await waitForPage(bob, 'Ada’s caret', () =>
      [...document.querySelectorAll('.collaboration-carets__label')].some((l) => l.textContent === 'Ada'))
    await saved(ada, doc)
    await saved(bob, doc)
    await screenshot(ada, 'tiptap-1-ada-converged')
    await screenshot(bob, 'tiptap-2-bob-converged')

    // A y-websocket client of the same document holds Tiptap's ProseMirror XmlFragment...
    const yws = await tiptap(suite.relay, ['Yuri', '#4a148c'], [doc], { client: 'y-websocket' })
    const xml = await fragmentOf(yws)
    // (Y.XmlElement's toString lowercases node names; the names themselves are Tiptap's.)
    assert.equal(xml, '<paragraph>Top with <bold>strong words</bold></paragraph><paragraph>Bottom</paragraph>' +
      '<bulletlist><listitem><paragraph>first item</paragraph></listitem>' +
      '<listitem><paragraph>second item</paragraph></listitem></bulletlist>')
    assert.deepEqual(await yws.page.evaluate(() => window.tiptapTest.fragment.toArray().map((n) => n.nodeName)),
      ['paragraph', 'paragraph', 'bulletList'])
    // ...and what it adds there shows in both Tiptap editors.
    await yws.page.evaluate(() => {
      const { Y, fragment } = window.tiptapTest
      const paragraph = new Y.XmlElement('paragraph')
      paragraph.insert(0, [new Y.XmlText('From y-websocket')])
      fragment.push([paragraph])
    })
    const final = await waitForSameHtml([ada, bob], doc, 'the y-websocket paragraph in Tiptap',
      (h) => h === `${expected}<p>From y-websocket</p>`)
    await screenshot(yws, 'tiptap-3-y-websocket-client')

    // A late joiner gets everything.
    const cleo = await tiptap(suite.relay, CLEO, [doc])
    assert.equal(await htmlOf(cleo, doc), final)
    await screenshot(cleo, 'tiptap-4-late-joiner')
  })

  browserTest('one page edits several documents over one HocuspocusProviderWebsocket, each kept apart', async () => {
    const docs = ['alpha', 'beta', 'gamma'].map(docName)
    const ada = await tiptap(suite.relay, ADA, docs)
    const bob = await tiptap(suite.relay, BOB, docs)
    for (const p of [ada, bob]) {
      assert.deepEqual(p.sockets, [`${suite.relay.url.replace('http', 'ws')}/hocuspocus`], `${p.name}'s page opened one socket`)
    }
    await caretAt(ada, docs[0])
    await ada.page.keyboard.type('Alpha by Ada')
    await caretAt(bob, docs[2])
    await bob.page.keyboard.type('Gamma by Bob')
    await caretAt(ada, docs[1])
    await ada.page.keyboard.type('Beta by Ada')
    await caretAt(bob, docs[1])
    await bob.page.keyboard.press('Enter')
    await bob.page.keyboard.type('Beta by Bob')
    await waitForSameHtml([ada, bob], docs[0], 'alpha', (h) => h === '<p>Alpha by Ada</p>')
    await waitForSameHtml([ada, bob], docs[1], 'beta', (h) => h === '<p>Beta by Ada</p><p>Beta by Bob</p>')
    await waitForSameHtml([ada, bob], docs[2], 'gamma', (h) => h === '<p>Gamma by Bob</p>')
    for (const doc of docs) await saved(ada, doc)
    for (const doc of docs) await saved(bob, doc)
    await screenshot(bob, 'tiptap-5-three-documents-one-socket')
    // Still one socket each: nothing reconnected or opened a second one on the way.
    assert.equal(ada.sockets.length, 1)
    assert.equal(bob.sockets.length, 1)

    // The documents are the relay's ordinary rooms: a y-websocket client of one sees its text only.
    const yws = await tiptap(suite.relay, ['Yuri', '#4a148c'], [docs[1]], { client: 'y-websocket' })
    assert.equal(await fragmentOf(yws), '<paragraph>Beta by Ada</paragraph><paragraph>Beta by Bob</paragraph>')
  })

  browserTest('a read-only token: the page shows it, the editor’s edits never reach the relay or the others', async () => {
    await withRelay(['--jwt-secret', SECRET], async ([relay]) => {
      const doc = docName('tiptap-readonly')
      const exp = Math.floor(Date.now() / 1000) + 3600
      const token = (sub, perm, docs = [doc]) => mintToken(SECRET, { sub, docs, perm, exp })
      const ada = await tiptap(relay, ADA, [doc], { token: token('ada', 'write') })
      await caretAt(ada, doc)
      await ada.page.keyboard.type('Written by Ada')
      await saved(ada, doc)

      const cy = await tiptap(relay, ['Cy', '#4a148c'], [doc], { token: token('cy', 'read'), expectAuth: 'read-only' })
      assert.equal(await htmlOf(cy, doc), '<p>Written by Ada</p>')
      assert.match(await cy.page.locator('.status').textContent(), /read-only/)
      // Cy types anyway (the page leaves the editor editable): the relay answers every change
      // with "not applied", and the page counts them as not saved.
      await caretAt(cy, doc)
      await cy.page.keyboard.type(' and Cy')
      await waitForPage(cy, 'every change of Cy’s to be answered as not applied', (doc) => {
        const { state } = window.tiptapTest.docs[doc]
        return state.localUpdates > 0 && state.refused === state.localUpdates
      }, doc, () => window.tiptapTest.docs[Object.keys(window.tiptapTest.docs)[0]].state)
      assert.match(await cy.page.locator('.status').textContent(), /read-only · \d+ changes? not saved/)
      await screenshot(cy, 'tiptap-6-read-only')

      // Ada writes after that; once the relay has saved it, Cy sees it and Ada never saw Cy's.
      await caretAt(ada, doc)
      await ada.page.keyboard.type(' again')
      await saved(ada, doc)
      await waitForPage(cy, 'Ada’s later words at Cy’s', (doc) =>
        window.tiptapTest.docs[doc].editor.getText().includes('again'), doc)
      assert.equal(await htmlOf(ada, doc), '<p>Written by Ada again</p>')
      const response = await fetch(`${relay.url}/api/v1/docs/${encodeURIComponent(doc)}/content`,
        { headers: { authorization: `Bearer ${token('ada', 'read')}` } })
      assert.equal(response.status, 200)
      const stored = JSON.stringify((await response.json()).content)
      assert.ok(stored.includes('Written by Ada again') && !stored.includes('Cy'), `the relay holds ${stored}`)
      // A newcomer with a read token gets the relay's document: without Cy's words.
      const dan = await tiptap(relay, ['Dan', '#1b5e20'], [doc], { token: token('dan', 'read'), expectAuth: 'read-only' })
      assert.equal(await htmlOf(dan, doc), '<p>Written by Ada again</p>')

      // A token for another document is refused, and the page says so.
      const eve = await tiptap(relay, ['Eve', '#1b5e9e'], [doc], { token: token('eve', 'write', ['elsewhere']), expectAuth: 'refused' })
      assert.match(await eve.page.locator('.status').textContent(), /access refused/)
      assert.equal(await eve.page.evaluate((doc) => window.tiptapTest.docs[doc].editor.getText(), doc), '')
      await screenshot(eve, 'tiptap-7-refused')
    })
  })

  browserTest('kill -9 and a restart lose nothing the other page had seen', async () => {
    await withRelay([], async (relays) => {
      const [first] = relays
      const doc = docName('tiptap-kill')
      const ada = await tiptap(first, ADA, [doc])
      const bob = await tiptap(first, BOB, [doc])
      await caretAt(ada, doc)
      await ada.page.keyboard.type('Notes')
      await waitForSameHtml([ada, bob], doc, 'Ada’s first word at Bob’s', (h) => h === '<p>Notes</p>')
      await caretAt(bob, doc)
      await bob.page.keyboard.press('Enter')
      await bob.page.keyboard.type('- from Bob')
      await saved(bob, doc)
      await caretAt(ada, doc, 0)
      await ada.page.keyboard.type(' ')
      await ada.page.keyboard.press('Control+b')
      await ada.page.keyboard.type('Ada typed this just before the crash')
      // The moment Bob's page shows Ada's last keystroke, the relay dies: no waiting for saves.
      await waitForPage(bob, 'Ada’s last word at Bob’s', (doc) =>
        window.tiptapTest.docs[doc].editor.getText().includes('before the crash'), doc)
      await first.kill()
      const seen = await htmlOf(bob, doc)
      assert.match(seen, /^<p>Notes <strong>Ada typed this just before the crash<\/strong><\/p><ul><li><p>from Bob<\/p><\/li><\/ul>$/)
      for (const p of [ada, bob]) assert.deepEqual(p.errors, [], `${p.name}'s page reported errors`)
      await screenshot(bob, 'tiptap-8-bob-before-restart')
      // No page may refill the restarted relay: close them first.
      await Promise.all([ada, bob].map((p) => p.context.close()))
      suite.open = []

      const second = await startRelay([], { dataDir: first.dataDir })
      relays.push(second)
      const cleo = await tiptap(second, CLEO, [doc])
      assert.equal(await htmlOf(cleo, doc), seen)
      await screenshot(cleo, 'tiptap-9-after-restart')
    })
  })
})
