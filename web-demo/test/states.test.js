// Issue 19's list of small wrong states, each driven in a real browser against the real relay:
// the skip link, publishing-note messages around conflicts, keyboard focus after resolving,
// name-label contrast for every palette colour and for picked colours, title and notes while
// offline, the live panel's round-trip figure, someone else's title while you hold a draft, and
// distinct names and colours for two tabs of one browser.

import assert from 'node:assert/strict'
import { describe, test } from 'node:test'

import {
  assertAccessible, browserSuite, docName, screenshot, typeAtEnd, waitForIndicator, waitForPage
} from './harness.js'
import { PALETTE } from '../src/identity.js'

const suite = browserSuite()
const { person, browserTest } = suite

/** Waits until both register panels of `p` are connected. */
async function panelsReady (p) {
  await waitForPage(p, 'the register panels to connect', () =>
    !document.getElementById('title-form').hasAttribute('data-offline') &&
    !document.getElementById('notes-form').hasAttribute('data-offline') &&
    document.getElementById('notes-input').dataset.version !== undefined &&
    document.getElementById('title-status').textContent !== '')
}

/** WCAG contrast of two computed CSS colours `rgb(r, g, b)`. */
function contrast (a, b) {
  const lum = (css) => {
    const [r, g, b] = css.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number).map((v) => v / 255)
      .map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b
  }
  const [hi, lo] = [lum(a), lum(b)].sort((x, y) => y - x)
  return (hi + 0.05) / (lo + 0.05)
}

describe('issue 19: no wrong states', () => {
  browserTest('the skip link puts the keyboard in the editable text', async () => {
    const ada = await person('Ada', '#1f77b4', docName('skip'))
    await ada.page.keyboard.press('Tab')
    assert.equal(await ada.page.evaluate(() => document.activeElement.textContent), 'Skip to the editor')
    await ada.page.keyboard.press('Enter')
    await waitForPage(ada, 'focus in the editable text',
      () => document.activeElement?.classList.contains('cm-content'), undefined,
      () => document.activeElement?.outerHTML.slice(0, 120))
    await ada.page.keyboard.type('typed after the skip link')
    await waitForPage(ada, 'the typing in the document',
      () => window.aetherflowDemo.ytext.toString() === 'typed after the skip link')
    await screenshot(ada, 'states-1-skip-link')
  })

  browserTest('name labels of every palette colour, and of picked colours, reach 4.5:1', async () => {
    const doc = docName('contrast')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    await typeAtEnd(bob, 'Bob is here')
    // Every palette colour, the old palette's weak ones, and a few a person might pick.
    for (const picked of [...PALETTE, '#2ca02c', '#9467bd', '#e377c2', '#ffff00', '#ffffff']) {
      await bob.page.evaluate((color) => {
        const input = document.getElementById('user-color')
        input.value = color
        input.dispatchEvent(new Event('input', { bubbles: true }))
      }, picked)
      await bob.page.locator('.cm-content').click()
      await bob.page.keyboard.press('End')
      const label = await waitForPage(ada, `Bob's label after picking ${picked}`, (published) => {
        const el = document.querySelector('.cm-ySelectionInfo')
        const state = [...window.aetherflowDemo.awareness.getStates().values()].find((s) => s.user?.name === 'Bob')
        if (!el || !state || state.user.color !== published) return null
        const style = getComputedStyle(el)
        return { fg: style.color, bg: style.backgroundColor, shown: state.user.color }
      }, await bob.page.evaluate(() => window.aetherflowDemo.awareness.getLocalState().user.color),
      () => document.querySelector('.cm-ySelectionInfo')?.outerHTML)
      const ratio = contrast(label.fg, label.bg)
      assert.ok(ratio >= 4.5, `${picked} shown as ${label.shown}: label ${label.fg} on ${label.bg} is ${ratio.toFixed(2)}:1`)
      await assertAccessible(ada, `text-mode caret label of ${picked}`)
    }
    await screenshot(ada, 'states-2-label-of-a-picked-yellow')
  })

  browserTest('publishing notes: no dead-end message, no stacked conflict, focus stays in the panel', async () => {
    const doc = docName('notes-states')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    await Promise.all([panelsReady(ada), panelsReady(bob)])
    await ada.page.getByLabel('Notes', { exact: true }).fill('Ship on Monday.')
    await bob.page.getByLabel('Notes', { exact: true }).fill('Ship after the review.')
    await ada.page.getByRole('button', { name: 'Save notes' }).click()
    await waitForPage(bob, 'Bob to learn of version 1', () => document.getElementById('notes-version').textContent.startsWith('Version 1'))
    await bob.page.getByRole('button', { name: 'Save notes' }).click()
    for (const p of [ada, bob]) {
      await waitForPage(p, 'one open conflict', () => document.querySelectorAll('#conflicts .conflict').length === 1)
    }
    await waitForPage(bob, 'Bob told to choose below', () => document.getElementById('notes-status').textContent.includes('choose below'))

    // Saving again while the conflict is open is refused, with a reason; still one conflict.
    await bob.page.getByLabel('Notes', { exact: true }).fill('Ship after the review, really.')
    await bob.page.getByRole('button', { name: 'Save notes' }).click()
    await waitForPage(bob, 'the refusal', () => document.getElementById('notes-status').textContent.includes('A conflict is open'),
      undefined, () => document.getElementById('notes-status').textContent)
    const conflicts = await (await fetch(`${suite.relay.url}/api/v1/docs/${encodeURIComponent(`${doc}.notes`)}/conflicts`)).json()
    assert.equal(conflicts.conflicts.length, 1, 'the relay holds one open conflict')
    assert.doesNotMatch(await bob.page.locator('#notes-status').textContent(), /will ask to resolve a conflict/)
    await screenshot(bob, 'states-3-second-save-refused')

    // Ada resolves by keyboard: her focus stays in the notes panel; Bob's message moves on.
    await ada.page.getByRole('button', { name: 'Keep Ada’s notes' }).focus()
    await ada.page.keyboard.press('Enter')
    await waitForPage(ada, 'focus on the notes after resolving', () =>
      document.getElementById('conflicts').hidden && document.activeElement?.id === 'notes-input',
    undefined, () => document.activeElement?.outerHTML.slice(0, 100))
    await waitForPage(bob, 'Bob told the conflict was resolved', () =>
      document.getElementById('conflicts').hidden && /resolved/.test(document.getElementById('notes-status').textContent) &&
        !/below/.test(document.getElementById('notes-status').textContent),
    undefined, () => document.getElementById('notes-status').textContent)
    await screenshot(bob, 'states-4-resolved-by-the-other')
  })

  browserTest('offline: title and notes are really disabled and say why; the round trip says offline', async () => {
    const doc = docName('offline-panels')
    const ada = await person('Ada', '#1f77b4', doc)
    await panelsReady(ada)
    await waitForPage(ada, 'a round-trip figure', () => /ms$/.test(document.getElementById('rtt').textContent))
    await ada.page.getByRole('button', { name: 'Work offline' }).click()
    const seen = await ada.page.evaluate(() => ({
      state: document.getElementById('status').dataset.state,
      rtt: document.getElementById('rtt').textContent
    }))
    assert.deepEqual(seen, { state: 'offline', rtt: 'offline' }, 'no stale figure once offline')
    for (const [button, note] of [['Set title', '#title-form-offline'], ['Save notes', '#notes-form-offline']]) {
      await waitForPage(ada, `${button} disabled`, (name) =>
        [...document.querySelectorAll('button')].find((b) => b.textContent === name)?.disabled === true, button)
      assert.ok(await ada.page.locator(note).isVisible(), `${note} explains why`)
    }
    await screenshot(ada, 'states-5-offline-panels')
    await ada.page.getByRole('button', { name: 'Reconnect' }).click()
    await panelsReady(ada)
    assert.equal(await ada.page.getByRole('button', { name: 'Set title' }).isDisabled(), false)
  })

  browserTest('someone else’s title is shown while you hold a draft', async () => {
    const doc = docName('title-draft')
    const ada = await person('Ada', '#1f77b4', doc)
    const bob = await person('Bob', '#d62728', doc)
    await Promise.all([panelsReady(ada), panelsReady(bob)])
    await bob.page.getByLabel('Document title', { exact: true }).fill('Bob’s draft')
    await ada.page.getByLabel('Document title', { exact: true }).fill('Q3 plan')
    await ada.page.getByLabel('Document title', { exact: true }).press('Enter')
    await waitForPage(bob, 'Ada’s title named beside Bob’s draft', () =>
      document.getElementById('title-status').textContent.includes('Q3 plan'),
    undefined, () => document.getElementById('title-status').textContent)
    assert.equal(await bob.page.getByLabel('Document title', { exact: true }).inputValue(), 'Bob’s draft')
    await screenshot(bob, 'states-6-title-beside-draft')
  })

  browserTest('two tabs of one browser show distinct names and colours', async () => {
    const doc = docName('two-tabs')
    const ada = await person('Ada', '#1f77b4', doc)
    const page = await ada.context.newPage()
    await page.goto(ada.page.url())
    const tab2 = { name: 'Ada (tab 2)', page, context: ada.context, errors: [] }
    await waitForIndicator(tab2, 'synced', false)
    const people = await waitForPage(ada, 'two distinct people', () => {
      const users = [...window.aetherflowDemo.awareness.getStates().values()].map((s) => s.user).filter(Boolean)
      const distinct = users.length === 2 && users[0].name !== users[1].name && users[0].color !== users[1].color
      return distinct ? users.map((u) => u.name).sort() : null
    }, undefined, () => [...window.aetherflowDemo.awareness.getStates().values()].map((s) => s.user))
    assert.deepEqual(people, ['Ada', 'Ada (2)'])
    await screenshot(ada, 'states-7-two-tabs')
  })
})
