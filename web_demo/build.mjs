// Builds the demo into a folder (argument; `npm run build` writes dist/): the page, its style
// sheet, and one bundled, minified script with its licences beside it. The same sources and the
// same lock file give the same bytes, which is how the test suite knows dist/ is up to date.
import { copyFile, mkdir, rm } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'

const here = dirname(fileURLToPath(import.meta.url))
const out = resolve(process.argv[2] ?? join(here, 'dist'))

await rm(out, { recursive: true, force: true })
await mkdir(out, { recursive: true })
await build({
  absWorkingDir: here,
  entryPoints: ['src/main.js'],
  bundle: true,
  format: 'esm',
  target: ['es2020'],
  minify: true,
  legalComments: 'external',
  charset: 'utf8',
  outfile: join(out, 'demo.js'),
  logLevel: 'warning'
})
for (const file of ['index.html', 'demo.css']) {
  await copyFile(join(here, 'src', file), join(out, file))
}
