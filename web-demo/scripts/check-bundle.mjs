// Fails when the committed dist/ is not what the sources build to: rebuilds into a temporary
// directory and compares every file byte for byte. Run `npm run build` and commit dist/ to fix.

import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { build, ROOT } from './build.mjs'

const dist = path.join(ROOT, 'dist')
const fresh = await mkdtemp(path.join(tmpdir(), 'aetherflow-web-demo-'))
try {
  await build(fresh)
  const expected = (await readdir(fresh)).sort()
  const committed = (await readdir(dist).catch(() => [])).sort()
  const problems = []
  for (const name of new Set([...expected, ...committed])) {
    if (!expected.includes(name)) { problems.push(`dist/${name} is not built from the sources any more`); continue }
    if (!committed.includes(name)) { problems.push(`dist/${name} is missing`); continue }
    const [a, b] = await Promise.all([readFile(path.join(fresh, name)), readFile(path.join(dist, name))])
    if (!a.equals(b)) problems.push(`dist/${name} differs from a fresh build (${b.length} bytes committed, ${a.length} built)`)
  }
  if (problems.length > 0) {
    console.error('check-bundle: the committed bundle does not match the sources:')
    for (const problem of problems) console.error(`  - ${problem}`)
    console.error('Run `npm run build` in web-demo/ and commit web-demo/dist/.')
    process.exitCode = 1
  } else {
    console.log(`check-bundle: dist/ matches the sources (${expected.join(', ')})`)
  }
} finally {
  await rm(fresh, { recursive: true, force: true })
}
