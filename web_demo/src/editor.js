// One shared document in a CodeMirror 6 editor, bound with y-codemirror.next through the stock
// y-websocket provider: remote cursors and selections with names and colours, the list of who
// is here (people and agents, from awareness), and the connection's status.

import { EditorState } from '@codemirror/state'
import { keymap } from '@codemirror/view'
import { EditorView, basicSetup } from 'codemirror'
import { yCollab, yUndoManagerKeymap } from 'y-codemirror.next'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'
import { safeColor } from './names.js'

const text = (value) => (typeof value === 'string' ? value : '')

/** The room name y-websocket appends to `/ws/workspaces`: the workspace, then the path encoded. */
export function roomName (workspaceId, path) {
  return path ? `${workspaceId}/${encodeURIComponent(path)}` : workspaceId
}

export class DocumentEditor {
  /**
   * @param {object} options
   * @param {HTMLElement} options.parent
   * @param {string} options.serverUrl  ws://host/ws/workspaces
   * @param {string} options.workspaceId
   * @param {string} options.path  '' for the workspace's main document
   * @param {{ userId: string, name: string, token: string, color: string }} options.user
   * @param {boolean} options.readOnly  a viewer: the server would drop its edits, so none are offered
   * @param {(status: string, detail?: string) => void} options.onStatus  connecting, connected, synced, disconnected, refused
   * @param {(peers: Array<{clientId: number, self: boolean, name: string, color: string, agent: ?{id: string, status: string, progress: number, step: string}}>) => void} options.onPeers
   */
  constructor ({ parent, serverUrl, workspaceId, path, user, readOnly, onStatus, onPeers }) {
    this.onStatus = onStatus
    this.onPeers = onPeers
    this.doc = new Y.Doc()
    this.text = this.doc.getText('text')
    this.provider = new WebsocketProvider(serverUrl, roomName(workspaceId, path), this.doc, {
      params: { token: user.token },
      disableBc: true // every edit goes through the server, also between tabs of one browser
    })
    this.setUser(user)
    const undoManager = new Y.UndoManager(this.text)
    this.view = new EditorView({
      parent,
      state: EditorState.create({
        doc: this.text.toString(),
        extensions: [
          keymap.of(yUndoManagerKeymap),
          basicSetup,
          EditorView.lineWrapping,
          EditorView.contentAttributes.of({ 'aria-label': 'shared document' }),
          EditorState.readOnly.of(readOnly),
          EditorView.editable.of(!readOnly),
          yCollab(this.text, this.provider.awareness, { undoManager })
        ]
      })
    })
    this.provider.on('status', ({ status }) => this.onStatus(status === 'connected' && this.provider.synced ? 'synced' : status))
    this.provider.on('sync', (synced) => { if (synced) this.onStatus('synced') })
    this.provider.on('closed', ({ code, reason }) => this.onStatus('refused', `${code} ${reason}`.trim()))
    this.provider.awareness.on('change', () => this.peersChanged())
    this.onStatus('connecting')
    this.peersChanged()
  }

  setUser ({ userId, name, token, color }) {
    this.provider.params = { token }
    this.provider.awareness.setLocalStateField('user', { id: userId, name, color, colorLight: `${color}33` })
  }

  reconnect () {
    this.provider.disconnect()
    this.provider.connect()
  }

  /** Everyone in the document's awareness, with what other clients sent them checked: only
   * strings for names, only colours for colours. */
  peersChanged () {
    const own = this.doc.clientID
    const peers = []
    for (const [clientId, state] of this.provider.awareness.getStates()) {
      const user = state?.user
      if (user == null || typeof user !== 'object') continue
      const agent = state.agent != null && typeof state.agent === 'object' ? state.agent : null
      peers.push({
        clientId,
        self: clientId === own,
        name: text(user.name) || `client ${clientId}`,
        color: safeColor(user.color),
        agent: agent && {
          id: text(agent.id),
          status: text(agent.status),
          progress: Number.isFinite(agent.progress) ? agent.progress : 0,
          step: text(agent.current_step)
        }
      })
    }
    this.onPeers(peers)
  }

  destroy () {
    this.view.destroy()
    this.provider.destroy()
    this.doc.destroy()
  }
}
