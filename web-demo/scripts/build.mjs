// Builds the demo into a directory (default: dist/): app.js (every module bundled and minified
// by esbuild), app.css, and index.html whose asset links carry each asset's content version
// (`?v=`, FNV-1a 64 of its bytes, the same hash the relay computes in server/src/web_demo.rs).
// The output depends only on the sources and the locked package versions, so
// scripts/check-bundle.mjs can rebuild and compare it byte for byte with the committed dist/.
//
//   node scripts/build.mjs [OUTDIR]

import { mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** FNV-1a 64 of `bytes`, as 16 hex digits. */
export function contentVersion (bytes) {
  let hash = 0xcbf29ce484222325n
  for (const byte of bytes) {
    hash ^= BigInt(byte)
    hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn
  }
  return hash.toString(16).padStart(16, '0')
}

async function bundle (entry, outfile) {
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: [entry],
    outfile,
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
    charset: 'utf8',
    legalComments: 'eof',
    sourcemap: false,
    write: false,
    logLevel: 'warning'
  })
  if (result.outputFiles.length !== 1) throw new Error(`expected one output for ${entry}`)
  return result.outputFiles[0].contents
}

/** Builds into `outDir`; returns the written files' names. */
export async function build (outDir) {
  const js = await bundle('src/main.js', path.join(outDir, 'app.js'))
  const css = await bundle('src/app.css', path.join(outDir, 'app.css'))
  const template = await readFile(path.join(ROOT, 'src', 'index.html'), 'utf8')
  const html = template
    .replace('__APP_JS_VERSION__', contentVersion(js))
    .replace('__APP_CSS_VERSION__', contentVersion(css))
  await mkdir(outDir, { recursive: true })
  await writeFile(path.join(outDir, 'app.js'), js)
  await writeFile(path.join(outDir, 'app.css'), css)
  await writeFile(path.join(outDir, 'index.html'), html)
  return ['app.css', 'app.js', 'index.html']
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const outDir = path.resolve(ROOT, process.argv[2] ?? 'dist')
  const files = await build(outDir)
  console.log(`built ${files.join(', ')} into ${path.relative(process.cwd(), outDir) || '.'}`)
}
