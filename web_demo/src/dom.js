// A small element builder: user-supplied text always goes through textContent, never HTML.

/**
 * @param {string} tag
 * @param {Record<string, any>} [attrs] attributes; `class`, `text`, `on<event>` and `dataset` are special
 * @param {...(Node|string|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function h (tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(attrs)) {
    if (value == null || value === false) continue
    if (key === 'class') el.className = value
    else if (key === 'text') el.textContent = value
    else if (key === 'dataset') {
      for (const [name, data] of Object.entries(value)) if (data != null) el.dataset[name] = data
    }
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  for (const child of children) {
    if (child == null || child === false) continue
    el.append(child)
  }
  return el
}

/** @param {string} id */
export function byId (id) {
  const el = document.getElementById(id)
  if (el == null) throw new Error(`the page has no #${id}`)
  return el
}

/** Show exactly one message in a status line (or clear it). */
export function say (el, text, kind = 'info') {
  el.textContent = text
  el.dataset.kind = kind
  el.hidden = !text
}
