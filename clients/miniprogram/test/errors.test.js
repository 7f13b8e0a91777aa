// @ts-check
// Errors: what is resent and what is not, network failures, the error's fields, the code lists.
'use strict'

const assert = require('node:assert/strict')
const http = require('node:http')
const { after, before, test } = require('node:test')
const { createClient, WxgateError, GATEWAY_ERROR_CODES, CLIENT_ERROR_CODES } = require('..')
const { ALICE_OPENID, armFault, clearFaults, httpCall, installWx, startGateway } = require('./support')

/** @type {Awaited<ReturnType<typeof startGateway>>} */
let gateway

before(async () => {
  gateway = await startGateway()
})

after(async () => {
  if (gateway) await gateway.stop()
})

test('GATEWAY_ERROR_CODES is the running gateway\'s list of error codes (/openapi.json)', async () => {
  const res = await httpCall(`${gateway.url}/openapi.json`)
  assert.equal(res.status, 200)
  const published = JSON.parse(res.text).components.schemas.Error.properties.error.properties.code.enum
  assert.deepEqual([...GATEWAY_ERROR_CODES].sort(), [...published].sort())
  assert.equal(new Set(GATEWAY_ERROR_CODES).size, GATEWAY_ERROR_CODES.length)
  assert.deepEqual([...CLIENT_ERROR_CODES], ['user_denied', 'phone_unavailable', 'network'])
  for (const code of CLIENT_ERROR_CODES) assert.equal(published.includes(code), false, `${code} is the gateway's too`)
})

test('409 code_used surfaces as is: a single-use code is never resent', async () => {
  const wx = installWx({ gateway: gateway.url })
  await createClient({ baseURL: gateway.url, app: 'demo' }).login()
  const used = String(JSON.parse(String(wx.sentTo('/login')[0].body)).code)
  // another device (empty storage) whose wx.login hands out that same, spent code
  const other = installWx({ gateway: gateway.url })
  other.codeSource = async () => used
  await assert.rejects(createClient({ baseURL: gateway.url, app: 'demo' }).login(), (/** @type {any} */ e) => {
    assert.ok(e instanceof WxgateError)
    assert.equal(e.code, 'code_used')
    assert.equal(e.status, 409)
    assert.equal(e.retryable, false)
    assert.ok(e.message.length > 0)
    assert.match(e.hint, /single-use/)
    assert.match(String(e.requestId), /^[0-9a-f]{32}$/)
    assert.equal(e.retryAfter, null)
    return true
  })
  assert.equal(other.sentTo('/login').length, 1)
  assert.equal(other.calls.login, 1)
})

test('503 upstream_busy is resent after Retry-After with the same code, and the login succeeds', async () => {
  const wx = installWx({ gateway: gateway.url })
  await armFault(gateway.url, { api: 'jscode2session', errcode: -1 })
  const started = Date.now()
  const result = await createClient({ baseURL: gateway.url, app: 'demo' }).login()
  assert.equal(result.openid, ALICE_OPENID)
  assert.ok(Date.now() - started >= 1900, 'waited for Retry-After: 2')
  const sent = wx.sentTo('/login')
  assert.equal(sent.length, 2)
  assert.equal(sent[0].body, sent[1].body, 'WeChat did not spend the code: the same one is resent')
  assert.equal(wx.calls.login, 1)
})

test('retryable errors are resent at most maxRetries times, then surface with their fields', async () => {
  const wx = installWx({ gateway: gateway.url })
  await armFault(gateway.url, { api: 'jscode2session', errcode: -1, count: 5 })
  try {
    const gw = createClient({ baseURL: gateway.url, app: 'demo', maxRetries: 1 })
    await assert.rejects(gw.login(), (/** @type {any} */ e) => {
      assert.ok(e instanceof WxgateError)
      assert.equal(e.code, 'upstream_busy')
      assert.equal(e.status, 503)
      assert.equal(e.retryable, true)
      assert.equal(e.retryAfter, 2)
      assert.match(String(e.requestId), /^[0-9a-f]{32}$/)
      return true
    })
    assert.equal(wx.sentTo('/login').length, 2, 'sent, then resent once')
    // maxRetries: 0 sends once
    const none = installWx({ gateway: gateway.url })
    await assert.rejects(createClient({ baseURL: gateway.url, app: 'demo', maxRetries: 0 }).login())
    assert.equal(none.sentTo('/login').length, 1)
  } finally {
    await clearFaults(gateway.url)
  }
})

test('a Retry-After longer than the timeout is not waited for', async () => {
  const wx = installWx({ gateway: gateway.url })
  await armFault(gateway.url, { api: 'jscode2session', errcode: -1 })
  try {
    const gw = createClient({ baseURL: gateway.url, app: 'demo', timeout: 1500 })
    await assert.rejects(gw.login(), (/** @type {any} */ e) => e.code === 'upstream_busy' && e.retryAfter === 2)
    assert.equal(wx.sentTo('/login').length, 1)
  } finally {
    await clearFaults(gateway.url)
  }
})

test('429 rate_limited is resent after Retry-After', async () => {
  // The `limited` app allows one login per 2-second window: of three at once, at least one is
  // refused (three calls span at most two windows) and must be resent to succeed.
  const wx = installWx({ gateway: gateway.url, app: 'limited' })
  const clients = ['a', 'b', 'c'].map((key) =>
    createClient({ baseURL: gateway.url, app: 'limited', storageKey: key, maxRetries: 3 }),
  )
  const answers = await Promise.all(clients.map((gw) => gw.login()))
  assert.deepEqual(
    answers.map((a) => a.openid),
    answers.map(() => answers[0].openid),
  )
  assert.equal(wx.calls.login, 3)
  const sent = wx.sentTo('/login').length
  assert.ok(sent >= 4, `at least one login was refused and resent (${sent} sent)`)
})

test('wx.request failing (nothing listening) is a network error', async () => {
  installWx({ gateway: gateway.url })
  const closed = await new Promise((resolve) => {
    const server = http.createServer()
    server.listen(0, '127.0.0.1', () => {
      const address = /** @type {import('node:net').AddressInfo} */ (server.address())
      server.close(() => resolve(`http://127.0.0.1:${address.port}`))
    })
  })
  await assert.rejects(createClient({ baseURL: closed, app: 'demo' }).login(), (/** @type {any} */ e) => {
    assert.ok(e instanceof WxgateError)
    assert.equal(e.code, 'network')
    assert.equal(e.status, 0)
    assert.equal(e.retryable, false)
    assert.match(e.message, /request:fail/)
    return true
  })
})

test('wx.request timing out is a network error, after `timeout` ms', async () => {
  installWx({ gateway: gateway.url })
  /** @type {import('node:http').ServerResponse[]} */
  const held = []
  const server = http.createServer((_req, res) => held.push(res)) // never answers
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(null)))
  const address = /** @type {import('node:net').AddressInfo} */ (server.address())
  try {
    const gw = createClient({ baseURL: `http://127.0.0.1:${address.port}`, app: 'demo', timeout: 300 })
    const started = Date.now()
    await assert.rejects(gw.login(), (/** @type {any} */ e) => e.code === 'network' && /timeout/.test(e.message))
    assert.ok(Date.now() - started < 3000)
  } finally {
    for (const res of held) res.destroy()
    await new Promise((resolve) => server.close(() => resolve(null)))
  }
})

test('an answer that is not from wxgate (a proxy\'s page) is a network error with its status', async () => {
  installWx({ gateway: gateway.url })
  const server = http.createServer((_req, res) => {
    res.writeHead(502, { 'Content-Type': 'text/html', 'X-Request-Id': 'proxy-1' })
    res.end('<html>Bad Gateway</html>')
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(null)))
  const address = /** @type {import('node:net').AddressInfo} */ (server.address())
  try {
    const gw = createClient({ baseURL: `http://127.0.0.1:${address.port}`, app: 'demo' })
    await assert.rejects(gw.login(), (/** @type {any} */ e) => {
      assert.equal(e.code, 'network')
      assert.equal(e.status, 502)
      assert.equal(e.requestId, 'proxy-1')
      return true
    })
  } finally {
    await new Promise((resolve) => server.close(() => resolve(null)))
  }
})

test('options are checked, with documented defaults', () => {
  const gw = createClient({ baseURL: 'https://gw.example.com/', app: 'demo' })
  assert.equal(gw.storageKey, 'wxgate')
  assert.equal(gw.timeout, 10000)
  assert.equal(gw.maxRetries, 2)
  assert.throws(() => createClient(/** @type {any} */ ({ app: 'demo' })), TypeError)
  assert.throws(() => createClient({ baseURL: 'https://gw.example.com', app: '' }), TypeError)
  assert.throws(() => createClient({ baseURL: 'https://gw.example.com', app: 'demo', timeout: 0 }), TypeError)
  assert.throws(() => createClient({ baseURL: 'https://gw.example.com', app: 'demo', maxRetries: 1.5 }), TypeError)
})
