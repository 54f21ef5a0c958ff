// Documents of every shared type, written by a stock Yjs client; prints what Yjs's own toJSON()
// gives for each root, then stays connected until stdin closes.
// Usage: node tojson.mjs <base ws url> <room>
// Prints one JSON line: {root name: JSON.parse(JSON.stringify(root.toJSON()))}.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [base, room] = process.argv.slice(2)
const doc = new Y.Doc()
const provider = new WebsocketProvider(base, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
const roots = {}
const text = (name) => (roots[name] = doc.getText(name))

await new Promise((resolve) => provider.once('sync', resolve))

doc.transact(() => {
  text('emoji').insert(0, 'Hi 👋, party 🎉🎉 and 𝄞 music')
  text('combining').insert(0, 'e\u0301te\u0301 n\u0303 👩‍👩‍👧 family, 🇫🇷 flag')
  const formatted = text('formatted')
  formatted.insert(0, 'bold and plain, linked')
  formatted.format(0, 4, { bold: true })
  formatted.format(16, 6, { link: { href: 'https://example.com' } })
  formatted.insertEmbed(4, { image: 'cat.png' })
  text('edited').insert(0, 'abcdef🎉ghi')
  text('emptied').insert(0, 'all of this goes away')

  const values = (roots.values = doc.getArray('values'))
  values.push([1, 2.5, -3, 0, 'str', '', true, false, { a: { b: [1, 2] }, n: null }, [1, [2, [3]], null]])
  values.push([new Uint8Array([1, 2, 255]), 2 ** 53 - 1, 1e21, 0.1, -0, Infinity, NaN])
  const nested = (roots.nested = doc.getArray('nested'))
  const inner = new Y.Map()
  inner.set('k', 'v')
  nested.push([inner, new Y.Text('inner text'), new Y.Array(), 'after'])

  const map = (roots.map = doc.getMap('map'))
  map.set('number', 1)
  map.set('overwritten', 'first')
  map.set('removed', true)
  const deep = new Y.Map()
  map.set('nested', deep)
  const list = new Y.Array()
  deep.set('list', list)
  list.push(['x', { y: 'z' }])
  map.set('text', new Y.Text('text in a map'))
  const emptied = (roots.emptiedMap = doc.getMap('emptiedMap'))
  emptied.set('a', 1)
  emptied.set('b', 2)

  const xml = (roots.xml = doc.getXmlFragment('xml'))
  const paragraph = new Y.XmlElement('P')
  paragraph.setAttribute('data-z', 'last')
  paragraph.setAttribute('class', 'first')
  const words = new Y.XmlText('strong words and 👋 plain ones')
  paragraph.insert(0, [words])
  const listElement = new Y.XmlElement('ul')
  const item = new Y.XmlElement('li')
  item.insert(0, [new Y.XmlText('item')])
  listElement.insert(0, [item])
  const heading = new Y.XmlElement('heading')
  heading.setAttribute('level', 1)
  heading.setAttribute('\uffff', 'last in UTF-16 order')
  heading.setAttribute('😀', 'a surrogate pair sorts before U+FFFF')
  heading.setAttribute('big', 1e20)
  heading.setAttribute('small', 1e-7)
  heading.setAttribute('tiny', 0.00001)
  const numbered = new Y.XmlText('numbers')
  heading.insert(0, [numbered])
  xml.insert(0, [paragraph, listElement, heading, new Y.XmlText('tail')])
  words.format(0, 12, { strong: true, em: { class: 'x' } })
  numbered.format(0, 3, { link: { n: 3, half: 0.5 } })
})

doc.transact(() => {
  roots.edited.delete(2, 3)
  roots.edited.insert(roots.edited.length, ' end')
  roots.emptied.delete(0, roots.emptied.length)
  roots.map.set('overwritten', 'second')
  roots.map.delete('removed')
  roots.emptiedMap.delete('a')
  roots.emptiedMap.delete('b')
})

const json = {}
for (const [name, type] of Object.entries(roots)) json[name] = JSON.parse(JSON.stringify(type.toJSON()))
console.log(JSON.stringify(json))

process.stdin.resume()
process.stdin.on('end', () => { provider.destroy(); process.exit(0) })
