// Who the visitor is (a name on a development server, or a token), and the REST calls made as them.

import { userIdFor } from './names.js'

const STORAGE_KEY = 'rtc-demo-session'

const base64url = (text) => {
  const bytes = new TextEncoder().encode(text)
  let binary = ''
  for (const b of bytes) binary += String.fromCharCode(b)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

const fromBase64url = (part) => {
  const padded = part.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((part.length + 3) % 4)
  const binary = atob(padded)
  return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)))
}

/**
 * An unsigned token naming the user. A development server (no JWT_SECRET) reads a token's claims
 * without verifying it; a server with JWT_SECRET refuses it.
 */
export function developmentToken (userId, name) {
  return `${base64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${base64url(JSON.stringify({ sub: userId, name }))}.`
}

/** The claims of a token (not verified: the server does that), or null when it is not a JWT. */
export function claimsOf (token) {
  const parts = token.trim().split('.')
  if (parts.length !== 3) return null
  try {
    const claims = JSON.parse(fromBase64url(parts[1]))
    return claims !== null && typeof claims === 'object' ? claims : null
  } catch {
    return null
  }
}

/**
 * @typedef {{ kind: 'name' | 'token', userId: string, name: string, token: string }} Session
 */

/** @returns {Session} */
export function nameSession (name, userId = userIdFor(name)) {
  return { kind: 'name', userId, name, token: developmentToken(userId, name) }
}

/** @returns {Session | null} */
export function tokenSession (token) {
  const claims = claimsOf(token)
  if (claims == null || typeof claims.sub !== 'string') return null
  const name = typeof claims.name === 'string' && claims.name ? claims.name : claims.sub
  return { kind: 'token', userId: claims.sub, name, token: token.trim() }
}

/**
 * This window's session; else a token session saved by another window. A name is kept per window
 * (sessionStorage), so a second window on the same link is a second person; a token is also
 * remembered for the browser's other windows (localStorage).
 * @returns {Session | null}
 */
export function loadSession () {
  for (const storage of [sessionStorage, localStorage]) {
    try {
      const saved = JSON.parse(storage.getItem(STORAGE_KEY) ?? 'null')
      if (saved && typeof saved.token === 'string' && typeof saved.userId === 'string') return saved
    } catch {}
  }
  return null
}

export function saveSession (session) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session))
  if (session.kind === 'token') localStorage.setItem(STORAGE_KEY, JSON.stringify(session))
}

export function forgetSession () {
  sessionStorage.removeItem(STORAGE_KEY)
  localStorage.removeItem(STORAGE_KEY)
}

export class ApiError extends Error {
  constructor (status, code, message) {
    super(message)
    this.status = status
    this.code = code
  }
}

/**
 * A REST call as the session's user. Resolves with the JSON body (null for 204); rejects with
 * an ApiError carrying the server's error code and message.
 */
export async function api (session, path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' }
  if (session) headers.Authorization = `Bearer ${session.token}`
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const data = response.status === 204 ? null : await response.json().catch(() => null)
  if (!response.ok) {
    const error = data?.error ?? {}
    throw new ApiError(response.status, error.code ?? 'http_error', error.message ?? `HTTP ${response.status}`)
  }
  return data
}
