// @ts-check
// Shared by the tests: a real wxgate gateway in a child process, and a fake `wx` whose
// network calls are real HTTP to that gateway and whose phone is the gateway's sandbox.
'use strict'

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')

const ROOT = path.resolve(__dirname, '..', '..', '..')
const ALICE_OPENID = 'oJOpXX7sOMj_ItfOlY-ThVU0D1kO'
const ALICE_PHONE = '13880755743'

// The default pipelines minus rate_limit (the tests log in more than 60 times a minute from one
// address) and webhook (no receiver). Apps: `demo` as shipped, with the cloudID flows; `limited`
// refuses a second login within 2 s; `remote` asks WeChat whether the stored session_key is current
// (session_key_stale); `nomask` has no mask_guard, so a masked number comes back as a 200;
// `nocloud` has no cloudID flows, as a configuration written before them.
const CONFIG = `
server: {host: 127.0.0.1, port: 0, log_format: json}
storage: {plugin: memory}
pipelines:
  login: [code2session, persist_user, {issue_session: {ttl: 7200}}]
  phone: [check_session, {decrypt: {kind: phone}}, {watermark: {max_age: 600}}, mask_guard, persist_phone, respond]
  phone_code: [check_session, phone_code, {watermark: {max_age: 600}}, mask_guard, persist_phone, respond]
  userinfo: [check_session, {decrypt: {kind: userinfo}}, verify_signature, {watermark: {max_age: 600}}, respond]
apps:
  demo:
    appid: wx0000000000demo0
    secret: sandbox-demo-secret
    upstream: sandbox
    pipelines:
      phone_cloud: [check_session, {cloud_data: {kind: phone}}, {watermark: {max_age: 600}}, mask_guard, persist_phone, respond]
      userinfo_cloud: [check_session, {cloud_data: {kind: userinfo}}, {watermark: {max_age: 600}}, respond]
  nocloud: {appid: wx00000000nocloud, secret: sandbox-nocloud-secret, upstream: sandbox}
  limited:
    appid: wx00000000limited
    secret: sandbox-limited-secret
    upstream: sandbox
    pipelines:
      login: [{rate_limit: {per: ip, limit: 1, window: 2}}, code2session, persist_user, issue_session]
  remote:
    appid: wx000000000remote
    secret: sandbox-remote-secret
    upstream: sandbox
    pipelines:
      phone_code: [{check_session: {remote: true}}, phone_code, mask_guard, persist_phone, respond]
  nomask:
    appid: wx000000000nomask
    secret: sandbox-nomask-secret
    upstream: sandbox
    pipelines:
      phone: [check_session, {decrypt: {kind: phone}}, persist_phone, respond]
`

/**
 * Starts wxgate on a free port; resolves when it says `gateway_started`.
 * @returns {Promise<{url: string, log: string[], stop: () => Promise<void>}>}
 */
async function startGateway() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wxgate-mp-'))
  const config = path.join(dir, 'gateway.yaml')
  fs.writeFileSync(config, CONFIG)
  const python = process.env.WXGATE_PYTHON || path.join(ROOT, '.venv', 'bin', 'python')
  const child = spawn(python, ['run.py', 'serve', '--config', config], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  /** @type {string[]} */
  const log = []
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error('wxgate did not start within 30 s')), 30000)
    /** @param {Error} error */
    function fail(error) {
      clearTimeout(timer)
      child.kill('SIGTERM')
      fs.rmSync(dir, { recursive: true, force: true })
      reject(new Error(`${error.message}\n${log.join('\n')}`))
    }
    /** JSON log lines; the gateway writes them to stderr, tracebacks too. @param {NodeJS.ReadableStream} stream */
    function readLines(stream) {
      let buffered = ''
      stream.on('data', (chunk) => {
        buffered += chunk
        let newline
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, newline)
          buffered = buffered.slice(newline + 1)
          log.push(line)
          try {
            const event = JSON.parse(line)
            if (event.event === 'gateway_started') {
              clearTimeout(timer)
              resolve(event.url)
            }
          } catch (e) {
            // not every line is JSON (a traceback at start-up)
          }
        }
      })
    }
    readLines(child.stdout)
    readLines(child.stderr)
    child.on('error', fail)
    child.on('exit', (status) => fail(new Error(`wxgate exited with status ${status}`)))
  })
  return {
    url,
    log,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve()
        child.removeAllListeners('exit')
        child.on('exit', () => {
          fs.rmSync(dir, { recursive: true, force: true })
          resolve()
        })
        child.kill('SIGTERM')
      }),
  }
}

/**
 * One HTTP exchange with node's http module (raw header names kept, as a phone may give them).
 * @param {string} url
 * @param {{method?: string, headers?: Record<string, string>, body?: string, timeout?: number}} [options]
 * @returns {Promise<{status: number, header: Record<string, string>, text: string}>}
 */
function httpCall(url, options = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: options.method || 'GET', headers: options.headers }, (res) => {
      /** @type {Record<string, string>} */
      const header = {}
      for (let i = 0; i < res.rawHeaders.length; i += 2) header[res.rawHeaders[i]] = res.rawHeaders[i + 1]
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => (text += chunk))
      res.on('end', () => resolve({ status: res.statusCode || 0, header, text }))
      res.on('error', reject)
    })
    if (options.timeout) {
      req.setTimeout(options.timeout, () => req.destroy(new Error('timeout')))
    }
    req.on('error', reject)
    req.end(options.body)
  })
}

/**
 * POST JSON to the gateway (the sandbox, or a raw API call from outside the client).
 * @param {string} url
 * @param {unknown} body
 * @param {Record<string, string>} [headers]
 */
async function postJSON(url, body, headers = {}) {
  const res = await httpCall(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  })
  return { status: res.status, body: res.text ? JSON.parse(res.text) : null, header: res.header }
}

/**
 * @typedef {{method: string, url: string, path: string, query: string, body: string | undefined,
 *   header: Record<string, string>}} Sent
 */

/**
 * A fake `wx` installed on globalThis. Its storage is a Map; login asks the sandbox for a code
 * for `user`; request makes real HTTP calls. Counters tell what the library did.
 * @param {{gateway: string, app?: string, user?: string, sdkVersion?: string,
 *   storage?: Map<string, unknown>}} options
 */
function installWx(options) {
  const app = options.app || 'demo'
  /** @type {Map<string, unknown>} */
  const storage = options.storage || new Map()
  const fake = {
    gateway: options.gateway,
    app,
    user: options.user || 'alice',
    sdkVersion: options.sdkVersion || '3.0.0',
    storage,
    calls: { login: 0, checkSession: 0, request: 0, showModal: 0, applyUpdate: 0 },
    /** @type {Sent[]} */
    sent: [],
    /** checkSession's answer: WeChat still holds the session_key of the last wx.login. */
    sessionValid: true,
    /** When set, wx.login gives this instead of asking the sandbox. @type {(() => Promise<string>) | null} */
    codeSource: null,
    /** When set, wx.login fails with this errMsg. @type {string | null} */
    loginFails: null,
    /** Rewrites an outgoing request (a test's man in the middle). @type {((sent: Sent) => void) | null} */
    tamper: null,
    /** The update manager's script. @type {{hasUpdate: boolean, ready?: boolean, confirm?: boolean}} */
    update: { hasUpdate: false },
    /** @type {Array<Record<string, unknown>>} */
    modals: [],

    /** @param {string} key */
    getStorageSync(key) {
      // WeChat answers '' for a missing key; values come back as copies, as from real storage
      return storage.has(key) ? JSON.parse(JSON.stringify(storage.get(key))) : ''
    },
    /** @param {string} key @param {unknown} value */
    setStorageSync(key, value) {
      storage.set(key, JSON.parse(JSON.stringify(value)))
    },
    /** @param {string} key */
    removeStorageSync(key) {
      storage.delete(key)
    },

    /** @param {{success?: Function, fail?: Function, complete?: Function}} opts */
    login(opts) {
      fake.calls.login++
      const source = fake.codeSource || (() => sandboxLogin(fake.gateway, app, fake.user))
      const failure = fake.loginFails
      ;(failure ? Promise.reject(new Error(failure)) : source()).then(
        (code) => callback(opts, 'success', { code, errMsg: 'login:ok' }),
        (error) => callback(opts, 'fail', { errMsg: `login:fail ${error.message}` }),
      )
    },

    /** @param {{success?: Function, fail?: Function, complete?: Function}} opts */
    checkSession(opts) {
      fake.calls.checkSession++
      setImmediate(() =>
        fake.sessionValid
          ? callback(opts, 'success', { errMsg: 'checkSession:ok' })
          : callback(opts, 'fail', { errMsg: 'checkSession:fail session time out, need relogin' }),
      )
    },

    /** wx.request as the base library does it, over real HTTP. @param {any} opts */
    request(opts) {
      fake.calls.request++
      const method = (opts.method || 'GET').toUpperCase()
      let url = String(opts.url)
      /** @type {string | undefined} */
      let body
      /** @type {Record<string, string>} */
      const header = { ...(opts.header || {}) }
      if (method === 'GET' && opts.data && typeof opts.data === 'object') {
        const query = Object.keys(opts.data)
          .map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(opts.data[k])}`)
          .join('&')
        url += (url.indexOf('?') >= 0 ? '&' : '?') + query
      } else if (opts.data !== undefined) {
        body = typeof opts.data === 'string' ? opts.data : JSON.stringify(opts.data)
      }
      const parsed = new URL(url)
      /** @type {Sent} */
      const sent = { method, url, path: parsed.pathname, query: parsed.search, body, header }
      if (fake.tamper) fake.tamper(sent)
      fake.sent.push(sent)
      httpCall(sent.url, { method, headers: sent.header, body: sent.body, timeout: opts.timeout || 60000 }).then(
        (res) => {
          let data = /** @type {unknown} */ (res.text)
          if ((opts.dataType || 'json') === 'json') {
            try {
              data = JSON.parse(res.text)
            } catch (e) {
              // wx leaves a body that is not JSON as a string
            }
          }
          callback(opts, 'success', { data, statusCode: res.status, header: res.header, cookies: [], errMsg: 'request:ok' })
        },
        (error) => callback(opts, 'fail', { errMsg: `request:fail ${error.message}` }),
      )
      return { abort() {} }
    },

    getAppBaseInfo() {
      return { SDKVersion: fake.sdkVersion }
    },
    getSystemInfoSync() {
      return { SDKVersion: fake.sdkVersion }
    },

    getUpdateManager() {
      /** @type {Record<string, Function>} */
      const handlers = {}
      setImmediate(() => {
        if (handlers.check) handlers.check({ hasUpdate: fake.update.hasUpdate })
        if (!fake.update.hasUpdate) return
        if (fake.update.ready === false) {
          if (handlers.failed) handlers.failed({})
        } else if (handlers.ready) {
          handlers.ready({})
        }
      })
      return {
        /** @param {Function} f */ onCheckForUpdate: (f) => (handlers.check = f),
        /** @param {Function} f */ onUpdateReady: (f) => (handlers.ready = f),
        /** @param {Function} f */ onUpdateFailed: (f) => (handlers.failed = f),
        applyUpdate: () => fake.calls.applyUpdate++,
      }
    },

    /** @param {any} opts */
    showModal(opts) {
      fake.calls.showModal++
      fake.modals.push(opts)
      const confirm = fake.update.confirm !== false
      setImmediate(() => callback(opts, 'success', { confirm, cancel: !confirm, errMsg: 'showModal:ok' }))
    },

    /** The requests sent to one gateway path, e.g. '/login'. @param {string} endpoint */
    sentTo(endpoint) {
      return fake.sent.filter((s) => s.path === `/v1/${app}${endpoint}`)
    },
  }
  Object.assign(globalThis, { wx: fake })
  return fake
}

/**
 * @param {any} opts
 * @param {'success' | 'fail'} kind
 * @param {unknown} result
 */
function callback(opts, kind, result) {
  if (opts && typeof opts[kind] === 'function') opts[kind](result)
  if (opts && typeof opts.complete === 'function') opts.complete(result)
}

/** What wx.login gives on the simulated phone. @param {string} gateway @param {string} app @param {string} user */
async function sandboxLogin(gateway, app, user) {
  const res = await postJSON(`${gateway}/_sandbox/${app}/wx.login`, { user })
  if (res.status !== 200) throw new Error(`sandbox wx.login: ${res.status}`)
  return /** @type {string} */ (res.body.code)
}

/**
 * The phone-number button's event, built from the sandbox's getPhoneNumber (encrypted with the
 * user's session_key at this moment); with `cloud`, it carries a cloudID too, as for a mini program
 * with cloud development.
 * @param {string} gateway
 * @param {{app?: string, user?: string, baseLibrary?: string, withCode?: boolean, realtime?: boolean, cloud?: boolean}} [options]
 * @returns {Promise<{type: string, detail: import('..').PhoneEventDetail}>}
 */
async function phoneEvent(gateway, options = {}) {
  /** @type {Record<string, string | boolean>} */
  const request = { user: options.user || 'alice' }
  if (options.baseLibrary) request.base_library = options.baseLibrary
  if (options.cloud) request.cloud = true
  const res = await postJSON(`${gateway}/_sandbox/${options.app || 'demo'}/getPhoneNumber`, request)
  if (res.status !== 200) throw new Error(`sandbox getPhoneNumber: ${res.status} ${JSON.stringify(res.body)}`)
  if (options.realtime) {
    // bindgetrealtimephonenumber: a code only, never encrypted data
    return { type: 'getrealtimephonenumber', detail: { errMsg: 'getRealtimePhoneNumber:ok', code: res.body.code } }
  }
  /** @type {{errMsg: string, encryptedData: string, iv: string, code?: string, cloudID?: string}} */
  const detail = { errMsg: 'getPhoneNumber:ok', encryptedData: res.body.encryptedData, iv: res.body.iv }
  // Below 2.21.2 WeChat gives no code; the tests choose the flow explicitly either way.
  if (options.withCode && res.body.code) detail.code = res.body.code
  if (res.body.cloudID) detail.cloudID = res.body.cloudID
  return { type: 'getphonenumber', detail }
}

/**
 * wx.getUserProfile's result from the sandbox; with `cloud`, as a mini program with cloud development gets it.
 * @param {string} gateway @param {string} [user] @param {{cloud?: boolean, app?: string}} [options]
 */
async function userProfile(gateway, user = 'alice', options = {}) {
  /** @type {Record<string, unknown>} */
  const request = { user }
  if (options.cloud) request.cloud = true
  const res = await postJSON(`${gateway}/_sandbox/${options.app || 'demo'}/getUserProfile`, request)
  if (res.status !== 200) throw new Error(`sandbox getUserProfile: ${res.status}`)
  return res.body
}

/** Arms a fault of the fake WeChat. @param {string} gateway @param {Record<string, unknown>} fault */
async function armFault(gateway, fault) {
  const res = await postJSON(`${gateway}/_sandbox/_faults`, fault)
  if (res.status !== 200) throw new Error(`sandbox faults: ${res.status}`)
}

/** @param {string} gateway */
async function clearFaults(gateway) {
  await httpCall(`${gateway}/_sandbox/_faults`, { method: 'DELETE' })
}

/** Ends a session from outside the client, as another device or an operator would. @param {string} gateway @param {string} token */
function revoke(gateway, token, app = 'demo') {
  return postJSON(`${gateway}/v1/${app}/logout`, {}, { Authorization: `Bearer ${token}` })
}

module.exports = {
  ALICE_OPENID,
  ALICE_PHONE,
  ROOT,
  armFault,
  clearFaults,
  httpCall,
  installWx,
  phoneEvent,
  postJSON,
  revoke,
  startGateway,
  userProfile,
}
