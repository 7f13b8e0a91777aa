// @ts-check
// Sessions: login, its reuse and sharing, re-login on a 401, logout.
'use strict'

const assert = require('node:assert/strict')
const { after, before, test } = require('node:test')
const { createClient, WxgateError } = require('..')
const { ALICE_OPENID, armFault, clearFaults, installWx, revoke, startGateway } = require('./support')

/** @type {Awaited<ReturnType<typeof startGateway>>} */
let gateway

before(async () => {
  gateway = await startGateway()
})

after(async () => {
  if (gateway) await gateway.stop()
})

/** @param {Partial<import('..').ClientOptions>} [options] */
function client(options = {}) {
  return createClient({ baseURL: gateway.url, app: 'demo', ...options })
}

/** The token the client keeps in wx storage. @param {ReturnType<typeof installWx>} wx @param {string} [key] */
function storedToken(wx, key = 'wxgate') {
  const value = /** @type {{token?: string} | undefined} */ (wx.storage.get(key))
  return value && value.token
}

test('login: wx.login once, the gateway session stored under storageKey', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client({ storageKey: 'my-session' })
  const result = await gw.login()
  assert.equal(result.openid, ALICE_OPENID)
  assert.equal(typeof result.unionid, 'string')
  assert.ok(result.expires_in > 7000 && result.expires_in <= 7200, `expires_in ${result.expires_in}`)
  assert.equal(wx.calls.login, 1)
  assert.match(String(storedToken(wx, 'my-session')), /^[A-Za-z0-9_-]{40,}$/)
  assert.equal(wx.storage.has('wxgate'), false)
  // Again in the same run: the session confirmed by the login is enough, no request at all.
  const requests = wx.calls.request
  assert.equal((await gw.login()).openid, ALICE_OPENID)
  assert.equal(wx.calls.login, 1)
  assert.equal(wx.calls.request, requests)
})

test('login: a stored token is reused after GET /session confirms it (next launch)', async () => {
  const wx = installWx({ gateway: gateway.url })
  await client().login()
  const token = storedToken(wx)
  // A new client over the same storage is the mini program's next launch.
  const result = await client().login()
  assert.equal(result.openid, ALICE_OPENID)
  assert.equal(wx.calls.login, 1, 'no second wx.login')
  const checks = wx.sentTo('/session')
  assert.equal(checks.length, 1)
  assert.equal(checks[0].method, 'GET')
  assert.equal(checks[0].header.Authorization, `Bearer ${token}`)
  assert.equal(storedToken(wx), token)
})

test('login: a stored token the gateway no longer knows is replaced by a fresh login', async () => {
  const wx = installWx({ gateway: gateway.url })
  await client().login()
  const old = String(storedToken(wx))
  assert.equal((await revoke(gateway.url, old)).status, 204)
  const result = await client().login()
  assert.equal(result.openid, ALICE_OPENID)
  assert.equal(wx.calls.login, 2)
  assert.notEqual(storedToken(wx), old)
})

test('login: N concurrent callers share one wx.login', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  const results = await Promise.all(Array.from({ length: 6 }, () => gw.login()))
  assert.equal(wx.calls.login, 1)
  assert.equal(wx.sentTo('/login').length, 1)
  for (const result of results) assert.equal(result.openid, ALICE_OPENID)
})

test('login: a failed login rejects every waiting caller, and the next call tries again', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await armFault(gateway.url, { api: 'jscode2session', errcode: 40029 }) // WeChat: invalid code
  try {
    const outcomes = await Promise.allSettled(Array.from({ length: 4 }, () => gw.login()))
    assert.equal(wx.calls.login, 1)
    for (const outcome of outcomes) {
      assert.equal(outcome.status, 'rejected')
      const error = /** @type {PromiseRejectedResult} */ (outcome).reason
      assert.ok(error instanceof WxgateError)
      assert.equal(error.code, 'invalid_code')
      assert.equal(error.status, 400)
    }
  } finally {
    await clearFaults(gateway.url)
  }
  assert.equal((await gw.login()).openid, ALICE_OPENID)
  assert.equal(wx.calls.login, 2)
})

test('login: wx.login failing is a network error, and not stuck', async () => {
  const wx = installWx({ gateway: gateway.url })
  wx.loginFails = 'offline'
  const gw = client()
  await assert.rejects(gw.login(), (/** @type {any} */ e) => e instanceof WxgateError && e.code === 'network')
  wx.loginFails = null
  assert.equal((await gw.login()).openid, ALICE_OPENID)
})

test('a 401 session_invalid re-logs in once for every waiting call, and resends each once', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const old = String(storedToken(wx))
  assert.equal((await revoke(gateway.url, old)).status, 204)
  const answers = await Promise.all(
    Array.from({ length: 4 }, () => gw.request({ path: '/session' })),
  )
  assert.equal(wx.calls.login, 2, 'exactly one re-login')
  for (const answer of answers) assert.equal(/** @type {any} */ (answer).openid, ALICE_OPENID)
  const sessionCalls = wx.sentTo('/session')
  assert.equal(sessionCalls.length, 8, 'each call sent twice: old token, then new')
  assert.equal(sessionCalls.filter((s) => s.header.Authorization === `Bearer ${old}`).length, 4)
  assert.notEqual(storedToken(wx), old)
})

test('a second 401 after the re-login is an error, never a loop', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  // Something between phone and gateway mangles the token of every /session call.
  wx.tamper = (sent) => {
    if (sent.path.endsWith('/session')) sent.header.Authorization = 'Bearer not-a-token-of-this-gateway'
  }
  await assert.rejects(gw.request({ path: '/session' }), (/** @type {any} */ e) => {
    assert.ok(e instanceof WxgateError)
    assert.equal(e.code, 'session_invalid')
    assert.equal(e.status, 401)
    return true
  })
  assert.equal(wx.calls.login, 2, 'one re-login')
  assert.equal(wx.sentTo('/session').length, 2, 'sent once, resent once')
})

test('request: GET without data, POST with data as a JSON body', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  const info = /** @type {any} */ (await gw.request({ path: 'session' }))
  assert.equal(info.openid, ALICE_OPENID)
  assert.equal(info.phone === null || typeof info.phone === 'object', true)
  const [sent] = wx.sentTo('/session')
  assert.equal(sent.method, 'GET')
  assert.equal(sent.body, undefined)
  await assert.rejects(
    gw.request({ path: '/userinfo', data: { encryptedData: 'AAAA', iv: 'AAAA' } }),
    (/** @type {any} */ e) => e.code === 'invalid_encrypted_data' && e.status === 400,
  )
  await assert.rejects(gw.request({ path: '/session', method: 'GET', data: { a: 1 } }), TypeError)
  const [post] = wx.sentTo('/userinfo')
  assert.equal(post.method, 'POST')
  assert.deepEqual(JSON.parse(String(post.body)), { encryptedData: 'AAAA', iv: 'AAAA' })
})

test('logout: POST /logout ends the session at the gateway and clears storage', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const token = String(storedToken(wx))
  await gw.logout()
  assert.equal(wx.storage.has('wxgate'), false)
  const [sent] = wx.sentTo('/logout')
  assert.equal(sent.method, 'POST')
  assert.equal(sent.header.Authorization, `Bearer ${token}`)
  // The gateway has forgotten it: the same token is now refused.
  assert.equal((await revoke(gateway.url, token)).status, 401)
  // Without a session, logout sends nothing; the next login is a fresh one.
  await gw.logout()
  assert.equal(wx.sentTo('/logout').length, 1)
  await gw.login()
  assert.equal(wx.calls.login, 2)
})

test('logout: a session the gateway already ended is cleared too', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  assert.equal((await revoke(gateway.url, String(storedToken(wx)))).status, 204)
  await gw.logout()
  assert.equal(wx.storage.has('wxgate'), false)
})
