// The server's JSON event channel (/ws): commands answered by `ack` or `error`, events with ids,
// and after a reconnect the subscriptions restored and what was missed replayed (`resume`).

export class CommandError extends Error {
  constructor (code, message) {
    super(message)
    this.code = code
  }
}

const MAX_BACKOFF_MS = 5000

export class EventChannel {
  /**
   * @param {object} options
   * @param {string} options.url  ws://host/ws
   * @param {() => string} options.token  read at every (re)connect
   * @param {(event: any) => void} options.onEvent  every server-sent event (it has an `id`)
   * @param {(data: any) => void} options.onResync  `resync_required`: events were lost, reload state
   * @param {(status: string, detail?: string) => void} options.onStatus  connecting, live, reconnecting, refused
   */
  constructor ({ url, token, onEvent, onResync, onStatus }) {
    this.url = url
    this.token = token
    this.onEvent = onEvent
    this.onResync = onResync
    this.onStatus = onStatus
    this.lastEventId = 0
    this.workspaceId = null
    /** @type {Set<string>} */
    this.agents = new Set()
    this.ws = null
    this.live = false
    this.closed = false
    this.failures = 0
    this.nextRequest = 1
    /** @type {Map<string, {resolve: Function, reject: Function}>} */
    this.pending = new Map()
    /** @type {Array<() => void>} */
    this.waiting = []
    this.connect()
  }

  connect () {
    if (this.closed) return
    const ws = new WebSocket(`${this.url}?token=${encodeURIComponent(this.token())}`)
    this.ws = ws
    this.onStatus(this.failures === 0 ? 'connecting' : 'reconnecting')
    ws.onmessage = (message) => this._receive(JSON.parse(message.data))
    ws.onclose = (event) => this._closed(ws, event)
  }

  /** Close for good. */
  close () {
    this.closed = true
    this.ws?.close(1000)
  }

  /** Close and open again at once (a new token, or the user asked). */
  reconnect () {
    this.ws?.close(1000)
  }

  /** Resolves once the channel is connected and welcomed. */
  ready () {
    return this.live ? Promise.resolve() : new Promise((resolve) => this.waiting.push(resolve))
  }

  /** Send a command; resolves with the `ack` data, rejects with a CommandError. */
  async request (type, data) {
    await this.ready()
    const requestId = `r${this.nextRequest++}`
    return new Promise((resolve, reject) => {
      this.pending.set(requestId, { resolve, reject })
      this.ws.send(JSON.stringify({ type, data, request_id: requestId }))
    })
  }

  async joinWorkspace (workspaceId) {
    if (this.workspaceId != null && this.workspaceId !== workspaceId) {
      const previous = this.workspaceId
      this.workspaceId = null
      await this.request('leave_workspace', { workspace_id: previous }).catch(() => {})
    }
    await this.request('join_workspace', { workspace_id: workspaceId })
    this.workspaceId = workspaceId
  }

  async subscribeAgent (agentId) {
    await this.request('subscribe_agent', { agent_id: agentId })
    this.agents.add(agentId)
  }

  async unsubscribeAll () {
    const agents = [...this.agents]
    this.agents.clear()
    await Promise.all(agents.map((id) => this.request('unsubscribe_agent', { agent_id: id }).catch(() => {})))
  }

  _receive (message) {
    if (message.type === 'welcome') {
      this._welcomed()
      return
    }
    if (message.request_id != null && this.pending.has(message.request_id)) {
      const { resolve, reject } = this.pending.get(message.request_id)
      this.pending.delete(message.request_id)
      if (message.type === 'error') reject(new CommandError(message.data.code, message.data.message))
      else resolve(message.data)
      return
    }
    if (message.type === 'resync_required') {
      this.onResync(message.data)
      return
    }
    if (typeof message.id === 'number') {
      this.lastEventId = Math.max(this.lastEventId, message.id)
      this.onEvent(message)
    }
  }

  /** Connected: restore the subscriptions, then ask for what was missed, in that order (the
   * server handles one connection's commands in order). */
  _welcomed () {
    const reconnected = this.failures > 0 || this.lastEventId > 0
    const send = (type, data, requestId) => this.ws.send(JSON.stringify({ type, data, request_id: requestId }))
    if (reconnected) {
      if (this.workspaceId != null) send('join_workspace', { workspace_id: this.workspaceId }, 'restore-workspace')
      for (const agentId of this.agents) send('subscribe_agent', { agent_id: agentId }, 'restore-agent')
      if (this.lastEventId > 0) send('resume', { last_event_id: this.lastEventId }, 'restore-resume')
    }
    this.failures = 0
    this.live = true
    this.onStatus('live')
    for (const resolve of this.waiting.splice(0)) resolve()
  }

  _closed (ws, event) {
    if (ws !== this.ws) return
    this.ws = null
    this.live = false
    for (const { reject } of this.pending.values()) reject(new CommandError('disconnected', 'the event channel closed'))
    this.pending.clear()
    if (this.closed) return
    if (event.code === 4401 || event.code === 4403) {
      this.onStatus('refused', event.reason || `closed with ${event.code}`)
      return
    }
    this.failures += 1
    this.onStatus('reconnecting')
    const delay = event.code === 1000 && this.failures === 1 ? 0 : Math.min(250 * 2 ** this.failures, MAX_BACKOFF_MS)
    setTimeout(() => this.connect(), delay)
  }
}
