// Generated names and colours for people and agents.

const ADJECTIVES = [
  'Amber', 'Brisk', 'Calm', 'Clever', 'Coral', 'Dapper', 'Eager', 'Gentle', 'Jolly', 'Keen',
  'Lucky', 'Mellow', 'Nimble', 'Quiet', 'Rapid', 'Sunny', 'Swift', 'Teal', 'Witty', 'Zesty'
]
const ANIMALS = [
  'Otter', 'Falcon', 'Panda', 'Lynx', 'Heron', 'Koala', 'Badger', 'Fox', 'Marten', 'Puffin',
  'Gecko', 'Bison', 'Crane', 'Hare', 'Ibis', 'Wren'
]
// Dark enough for the white name labels on remote cursors.
export const COLORS = [
  '#1971c2', '#2f9e44', '#e8590c', '#c2255c', '#7048e8', '#0c8599', '#9c36b5', '#5c940d',
  '#d9480f', '#364fc7'
]

const pick = (list) => list[Math.floor(Math.random() * list.length)]

export function randomHex (bytes = 3) {
  const values = crypto.getRandomValues(new Uint8Array(bytes))
  return Array.from(values, (b) => b.toString(16).padStart(2, '0')).join('')
}

export function generatedName () {
  return `${pick(ADJECTIVES)} ${pick(ANIMALS)}`
}

/** A user id from a display name: lower case, dashes; random when nothing is left. */
export function userIdFor (name) {
  const slug = name.normalize('NFKD').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '')
  return slug.slice(0, 48) || `user-${randomHex()}`
}

/** The same colour for the same id, everywhere. */
export function colorFor (id) {
  let hash = 0
  for (const ch of id) hash = (hash * 31 + ch.codePointAt(0)) >>> 0
  return COLORS[hash % COLORS.length]
}

/** A colour from someone else's awareness state, if it is one (it goes into a style attribute). */
export function safeColor (color) {
  return typeof color === 'string' && /^#[0-9a-f]{3,8}$/i.test(color) ? color : '#888888'
}
