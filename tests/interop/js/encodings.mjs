// One document encoded by Yjs as a v1 and as a v2 update (hex), for the update-format tests.
// Usage: node encodings.mjs '<text>'  -> {"v1": "...", "v2": "..."}
import * as Y from 'yjs'

const doc = new Y.Doc()
doc.getText('text').insert(0, process.argv[2])
const hex = (bytes) => Buffer.from(bytes).toString('hex')
console.log(JSON.stringify({ v1: hex(Y.encodeStateAsUpdate(doc)), v2: hex(Y.encodeStateAsUpdateV2(doc)) }))
