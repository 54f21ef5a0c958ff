// The demo page: sign in, workspaces, one document in the editor, who is here, and the agent
// monitor. Everything it shows comes from the server's public interfaces: REST, the y-websocket
// document protocol and the JSON event channel.

import { byId, h, say } from './dom.js'
import { runDemoAgent } from './demo-agent.js'
import { DocumentEditor } from './editor.js'
import { CommandError, EventChannel } from './events.js'
import { AgentMonitor } from './monitor.js'
import { colorFor, generatedName } from './names.js'
import { api, forgetSession, loadSession, nameSession, saveSession, tokenSession } from './session.js'

const WORKSPACE_ID = /^[A-Za-z0-9][A-Za-z0-9._~-]{0,254}$/
const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`

const ui = {
  signin: byId('signin'),
  signinMode: byId('signin-mode'),
  signinName: byId('signin-name'),
  signinToken: byId('signin-token'),
  signinMessage: byId('signin-message'),
  nameForm: byId('name-form'),
  tokenForm: byId('token-form'),
  app: byId('app'),
  identity: byId('identity'),
  meName: byId('me-name'),
  meColor: byId('me-color'),
  eventsStatus: byId('events-status'),
  workspaceList: byId('workspace-list'),
  workspacesMessage: byId('workspaces-message'),
  noWorkspace: byId('no-workspace'),
  workspaceView: byId('workspace-view'),
  workspaceTitle: byId('workspace-title'),
  docStatus: byId('doc-status'),
  docSelect: byId('doc-select'),
  docPath: byId('doc-path'),
  shareLink: byId('share-link'),
  editor: byId('editor'),
  documentMessage: byId('document-message'),
  presence: byId('presence'),
  presenceCount: byId('presence-count'),
  runAgent: byId('run-agent')
}

const app = {
  /** @type {'open' | 'jwt'} */
  auth: 'open',
  /** @type {import('./session.js').Session | null} */
  session: null,
  /** @type {EventChannel | null} */
  channel: null,
  /** @type {DocumentEditor | null} */
  editor: null,
  /** @type {{id: string, name: string, role: string | null} | null} */
  workspace: null,
  path: '',
  monitor: new AgentMonitor(byId('agents'), byId('agents-empty'), (agentId) =>
    api(app.session, `/agents/${encodeURIComponent(agentId)}`))
}

const userOf = (session) => ({ ...session, color: colorFor(session.userId) })

function setPill (el, state, text) {
  el.dataset.state = state
  el.textContent = text
}

// -- signing in ----------------------------------------------------------------------------------

async function boot () {
  const status = await api(null, '/status').catch(() => ({ auth: 'open' }))
  app.auth = status.auth === 'jwt' ? 'jwt' : 'open'
  const params = new URLSearchParams(location.search)
  let session = loadSession()
  if (session?.kind === 'name' && app.auth === 'jwt') session = null // unsigned tokens are refused there
  if (session == null && app.auth === 'open' && params.has('workspace')) {
    session = nameSession(generatedName()) // a shared link opens straight into the editor
  }
  if (session == null) {
    showSignIn()
    return
  }
  const refusal = await refusalOf(session)
  if (refusal != null) { // a saved token that expired since
    forgetSession()
    showSignIn()
    say(ui.signinMessage, `Sign in again: ${refusal}`, 'error')
    return
  }
  await start(session, params.get('workspace'), params.get('doc') ?? '')
}

/** Why the server refuses the session's token, or null when it accepts it. Asked over REST, so
 * the answer is a message, not a socket that never opens. */
async function refusalOf (session) {
  try {
    await api(session, '/workspaces?limit=1')
    return null
  } catch (error) {
    return error.message
  }
}

function showSignIn () {
  ui.app.hidden = true
  ui.identity.hidden = true
  ui.signin.hidden = false
  ui.nameForm.hidden = app.auth === 'jwt'
  ui.signinName.value = generatedName()
  ui.signinMode.textContent = app.auth === 'jwt'
    ? 'This server requires tokens. Ask your team for one, or mint one on the server: python -m server token --user alice --name Alice'
    : 'Development server: pick any name (or paste a token). Nothing is checked.'
}

ui.nameForm.addEventListener('submit', (event) => {
  event.preventDefault()
  const name = ui.signinName.value.trim()
  if (name) signIn(nameSession(name))
})

ui.tokenForm.addEventListener('submit', (event) => {
  event.preventDefault()
  const session = tokenSession(ui.signinToken.value)
  if (session == null) say(ui.signinMessage, 'That is not a JWT (three base64url parts, with a sub claim).', 'error')
  else signIn(session)
})

async function signIn (session) {
  const refusal = await refusalOf(session)
  if (refusal != null) {
    say(ui.signinMessage, `The server refused this token: ${refusal}`, 'error')
    return
  }
  const params = new URLSearchParams(location.search)
  await start(session, params.get('workspace'), params.get('doc') ?? '')
}

async function start (session, workspaceId, path) {
  app.session = session
  saveSession(session)
  say(ui.signinMessage, '')
  ui.signin.hidden = true
  ui.app.hidden = false
  ui.identity.hidden = false
  showIdentity()
  app.channel = new EventChannel({
    url: `${wsBase}/ws`,
    token: () => app.session.token,
    onEvent: channelEvent,
    onResync: (data) => {
      app.monitor.states(data.agents ?? [], true)
      if (app.workspace) loadAgents(app.workspace.id)
    },
    onStatus: (state, detail) => setPill(ui.eventsStatus, state, `events: ${state}${detail ? ` (${detail})` : ''}`)
  })
  await loadWorkspaces()
  if (workspaceId) await openWorkspace(workspaceId, path, { replace: true })
}

function showIdentity () {
  const { name, kind, userId } = app.session
  ui.meName.value = name
  ui.meName.readOnly = kind === 'token'
  ui.meName.title = kind === 'token' ? `signed in with a token as ${userId}` : 'your name, as others see it'
  ui.meColor.style.background = colorFor(userId)
}

ui.meName.addEventListener('change', () => {
  const name = ui.meName.value.trim()
  if (!name || app.session.kind !== 'name' || name === app.session.name) {
    ui.meName.value = app.session.name
    return
  }
  app.session = nameSession(name, app.session.userId)
  saveSession(app.session)
  showIdentity()
  app.editor?.setUser(userOf(app.session))
  app.channel?.reconnect()
})

byId('sign-out').addEventListener('click', () => {
  forgetSession()
  location.assign('/demo')
})

// -- workspaces ----------------------------------------------------------------------------------

async function loadWorkspaces () {
  try {
    const { data } = await api(app.session, '/workspaces?limit=100')
    ui.workspaceList.replaceChildren(...data.map((ws) => h('li', {},
      h('button', {
        type: 'button',
        class: `link${app.workspace?.id === ws.id ? ' current' : ''}`,
        dataset: { workspaceId: ws.id },
        title: ws.id,
        onclick: () => openWorkspace(ws.id, '')
      }, h('span', { text: ws.name }), h('small', { text: `${ws.visibility}${ws.role ? ` · ${ws.role}` : ''}` })))))
    if (data.length === 0) ui.workspaceList.replaceChildren(h('li', { class: 'muted', text: 'None yet: create one.' }))
  } catch (error) {
    say(ui.workspacesMessage, `Could not list workspaces: ${error.message}`, 'error')
  }
}

byId('create-form').addEventListener('submit', async (event) => {
  event.preventDefault()
  const name = byId('create-name').value.trim()
  try {
    const created = await api(app.session, '/workspaces', {
      method: 'POST',
      body: { name, visibility: byId('create-visibility').value }
    })
    byId('create-name').value = ''
    say(ui.workspacesMessage, '')
    await openWorkspace(created.id, '')
  } catch (error) {
    say(ui.workspacesMessage, error.message, 'error')
  }
})

byId('open-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const value = byId('open-id').value.trim()
  let id = value
  let path = ''
  try { // a pasted link works too
    const url = new URL(value)
    id = url.searchParams.get('workspace') ?? ''
    path = url.searchParams.get('doc') ?? ''
  } catch {}
  openWorkspace(id, path)
})

/** Join the workspace (creating it where the server allows), then open the document. */
async function joinOrCreate (workspaceId) {
  try {
    await app.channel.joinWorkspace(workspaceId)
  } catch (error) {
    if (!(error instanceof CommandError) || error.code !== 'unknown_workspace') throw error
    await api(app.session, '/workspaces', { method: 'POST', body: { id: workspaceId, name: workspaceId } })
    await app.channel.joinWorkspace(workspaceId)
  }
  return api(app.session, `/workspaces/${encodeURIComponent(workspaceId)}`)
}

async function openWorkspace (workspaceId, path, { replace = false } = {}) {
  if (!WORKSPACE_ID.test(workspaceId)) {
    say(ui.workspacesMessage, 'A workspace id is 1 to 255 of A-Z a-z 0-9 . _ ~ -, starting with a letter or digit.', 'error')
    return
  }
  say(ui.workspacesMessage, '')
  let workspace
  try {
    workspace = await joinOrCreate(workspaceId)
  } catch (error) {
    say(ui.workspacesMessage, `Cannot open ${workspaceId}: ${error.message}`, 'error')
    if (app.workspace != null) app.channel.joinWorkspace(app.workspace.id).catch(() => {}) // stay where we were
    return
  }
  app.workspace = { id: workspace.id, name: workspace.name, role: workspace.role }
  ui.noWorkspace.hidden = true
  ui.workspaceView.hidden = false
  ui.workspaceTitle.textContent = workspace.name
  ui.workspaceTitle.title = `${workspace.id} · ${workspace.visibility}${workspace.role ? ` · you are ${workspace.role}` : ''}`
  ui.runAgent.disabled = workspace.role === 'viewer'
  await app.channel.unsubscribeAll()
  app.monitor.clear()
  openDocument(path, { replace })
  await Promise.all([loadAgents(workspace.id), loadDocuments(), loadWorkspaces()])
}

// -- documents -----------------------------------------------------------------------------------

function shareUrl () {
  const url = new URL('/demo', location.origin)
  url.searchParams.set('workspace', app.workspace.id)
  if (app.path) url.searchParams.set('doc', app.path)
  return url.toString()
}

function openDocument (path, { replace = false } = {}) {
  app.editor?.destroy()
  app.path = path
  ui.editor.replaceChildren()
  say(ui.documentMessage, '')
  const link = shareUrl()
  ui.shareLink.value = link
  history[replace ? 'replaceState' : 'pushState'](null, '', link.slice(location.origin.length))
  app.editor = new DocumentEditor({
    parent: ui.editor,
    serverUrl: `${wsBase}/ws/workspaces`,
    workspaceId: app.workspace.id,
    path,
    user: userOf(app.session),
    readOnly: app.workspace.role === 'viewer',
    onStatus: documentStatus,
    onPeers: showPeers
  })
  selectDocument(path)
}

function documentStatus (state, detail) {
  const text = { synced: 'live', connected: 'syncing', connecting: 'connecting', disconnected: 'reconnecting', refused: 'refused' }[state] ?? state
  setPill(ui.docStatus, state, text)
  if (state === 'refused') say(ui.documentMessage, `The server closed this document: ${detail}`, 'error')
  else if (state === 'synced') say(ui.documentMessage, app.workspace?.role === 'viewer' ? 'You are a viewer here: you see every edit live, and cannot edit.' : '')
}

function selectDocument (path) {
  if (![...ui.docSelect.options].some((o) => o.value === path)) {
    ui.docSelect.append(h('option', { value: path, text: path || 'main document' }))
  }
  ui.docSelect.value = path
}

async function loadDocuments () {
  try {
    const { data } = await api(app.session, `/workspaces/${encodeURIComponent(app.workspace.id)}/documents`)
    const paths = new Set(['', ...data.map((d) => d.path), app.path])
    ui.docSelect.replaceChildren(...[...paths].sort().map((p) => h('option', { value: p, text: p || 'main document' })))
    ui.docSelect.value = app.path
  } catch {
    // A viewer of an empty workspace, or the database is busy: the current document still works.
  }
}

ui.docSelect.addEventListener('change', () => openDocument(ui.docSelect.value))

byId('doc-form').addEventListener('submit', (event) => {
  event.preventDefault()
  const path = ui.docPath.value.trim()
  ui.docPath.value = ''
  if (path !== app.path) openDocument(path)
})

byId('reconnect').addEventListener('click', () => {
  app.editor?.reconnect()
  if (!app.channel.live) app.channel.reconnect()
})

byId('copy-link').addEventListener('click', async () => {
  ui.shareLink.select()
  try {
    await navigator.clipboard.writeText(ui.shareLink.value)
    byId('copy-link').textContent = 'Copied'
  } catch {
    byId('copy-link').textContent = 'Select + copy'
  }
})

window.addEventListener('popstate', () => {
  const params = new URLSearchParams(location.search)
  const id = params.get('workspace')
  if (id && id !== app.workspace?.id) openWorkspace(id, params.get('doc') ?? '', { replace: true })
  else if (id) openDocument(params.get('doc') ?? '', { replace: true })
})

// -- presence ------------------------------------------------------------------------------------

function showPeers (peers) {
  const humans = peers.filter((p) => !p.agent).sort((a, b) => Number(b.self) - Number(a.self) || a.name.localeCompare(b.name))
  const agents = peers.filter((p) => p.agent)
  ui.presenceCount.textContent = String(peers.length)
  ui.presence.replaceChildren(
    ...humans.map((p) => h('li', { class: 'peer', dataset: { kind: 'human', self: p.self ? 'true' : null } },
      h('span', { class: 'swatch', style: `background:${p.color}` }),
      h('span', { class: 'peer-name', text: p.name }),
      p.self && h('small', { text: 'you' }))),
    ...agents.map((p) => h('li', { class: 'peer', dataset: { kind: 'agent', agentId: p.agent.id } },
      h('span', { class: 'swatch agent-swatch', style: `background:${p.color}` }),
      h('span', { class: 'peer-name', text: p.name }),
      h('small', { text: `${p.agent.status} · ${Math.round(p.agent.progress)} %${p.agent.step ? ` · ${p.agent.step}` : ''}` })))
  )
}

// -- agents --------------------------------------------------------------------------------------

async function loadAgents (workspaceId) {
  let agents
  try {
    ({ data: agents } = await api(app.session, `/agents/status?workspace_id=${encodeURIComponent(workspaceId)}`))
  } catch {
    return
  }
  if (app.workspace?.id !== workspaceId) return
  const recent = agents.slice(0, 20)
  app.monitor.states(recent)
  await Promise.all(recent.map((agent) => watchAgent(agent.agent_id, agent.status === 'running' || agent.status === 'queued')))
}

/** Follow an agent on the channel; `refresh`: then read its state and history over REST, so
 * nothing between the listing and the subscription is missed. */
async function watchAgent (agentId, refresh = true) {
  try {
    await app.channel.subscribeAgent(agentId)
  } catch {
    return // not visible to this user
  }
  if (refresh) await app.monitor.refresh(agentId)
}

function channelEvent (event) {
  const data = event.data ?? {}
  if (event.type.startsWith('agent_execution_')) {
    if (data.workspace_id === app.workspace?.id || app.monitor.has(data.agent_id)) {
      app.monitor.event(event)
    }
    return
  }
  if (event.type === 'workspace_update' && data.workspace_id === app.workspace?.id) {
    if (data.update_type === 'agent_added' && !app.channel.agents.has(data.agent_id)) {
      app.monitor.row(data.agent_id)
      watchAgent(data.agent_id)
    } else if (data.update_type === 'document_created' || data.update_type === 'document_deleted') {
      loadDocuments()
    } else if (data.update_type === 'workspace_renamed') {
      ui.workspaceTitle.textContent = data.name ?? ui.workspaceTitle.textContent
    }
  }
}

ui.runAgent.addEventListener('click', async () => {
  if (!app.workspace) return
  const workspaceId = app.workspace.id
  ui.runAgent.disabled = true
  try {
    await runDemoAgent(app.channel, workspaceId, () => app.editor?.text.toString() ?? '', (agentId, start) => {
      app.monitor.row(agentId).applyDetail(start)
      watchAgent(agentId)
    })
  } catch (error) {
    say(ui.documentMessage, `The demo agent stopped: ${error.message}`, 'error')
  } finally {
    ui.runAgent.disabled = app.workspace?.role === 'viewer'
  }
})

boot()
