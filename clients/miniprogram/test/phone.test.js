// @ts-check
// The phone-number button and user info, against the sandbox's real AES, and the seed's trap.
'use strict'

const assert = require('node:assert/strict')
const { after, before, test } = require('node:test')
const { createClient, WxgateError } = require('..')
const {
  ALICE_OPENID,
  ALICE_PHONE,
  armFault,
  installWx,
  phoneEvent,
  postJSON,
  startGateway,
  userProfile,
} = require('./support')

/** @type {Awaited<ReturnType<typeof startGateway>>} */
let gateway

before(async () => {
  gateway = await startGateway()
})

after(async () => {
  if (gateway) await gateway.stop()
})

/** @param {string} [app] */
function client(app = 'demo') {
  return createClient({ baseURL: gateway.url, app })
}

/** @param {any} answer */
function assertAlicePhone(answer) {
  assert.deepEqual(answer, { phoneNumber: ALICE_PHONE, purePhoneNumber: ALICE_PHONE, countryCode: '86' })
}

for (const [errMsg, code] of [
  ['getPhoneNumber:fail user deny', 'user_denied'],
  ['getPhoneNumber:fail:user cancel', 'user_denied'],
  ['getPhoneNumber:fail auth deny', 'user_denied'],
  ['getRealtimePhoneNumber:fail user deny', 'user_denied'],
  ['getPhoneNumber:fail no permission', 'phone_unavailable'],
  ['getPhoneNumber:fail:access denied', 'phone_unavailable'], // the app lacks the permission, not the user
  ['getPhoneNumber:fail 1400001:feature access failure', 'phone_unavailable'],
  ['', 'phone_unavailable'],
]) {
  test(`phone: a button answering '${errMsg}' is ${code}, without a call to the gateway`, async () => {
    const wx = installWx({ gateway: gateway.url })
    const gw = client()
    await assert.rejects(gw.phone({ detail: { errMsg } }), (/** @type {any} */ e) => {
      assert.ok(e instanceof WxgateError)
      assert.equal(e.code, code)
      assert.equal(e.status, 0)
      assert.equal(e.retryable, false)
      assert.ok(e.hint.length > 0)
      return true
    })
    assert.equal(wx.calls.request, 0)
    assert.equal(wx.calls.login, 0)
  })
}

test('phone: with a session, checkSession and the data in a POST body; no wx.login after the tap', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url) // the tap
  assertAlicePhone(await gw.phone(event))
  assert.equal(wx.calls.login, 1)
  assert.equal(wx.calls.checkSession, 1)
  const [sent] = wx.sentTo('/phone')
  assert.equal(sent.method, 'POST')
  assert.equal(sent.query, '', 'nothing in the URL')
  assert.equal(sent.header['content-type'], 'application/json')
  // exactly as the button gave them: no encoding, no '+' turned into a space
  assert.deepEqual(JSON.parse(String(sent.body)), { encryptedData: event.detail.encryptedData, iv: event.detail.iv })
  // the gateway now knows the number: GET /session says so, and the app need not ask (and pay) again
  /** @type {import('..').SessionInfo} */
  const session = await gw.request({ path: '/session' })
  assert.deepEqual(session.phone, { masked: '138****5743', countryCode: '86' })
})

test('phone: the phone code (base library 2.21.2+) goes alone to the phone-code flow', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url, { withCode: true })
  assert.ok(event.detail.code, 'the sandbox gives a code at base library 3.0.0')
  assertAlicePhone(await gw.phone(event))
  const [sent] = wx.sentTo('/phone')
  assert.deepEqual(JSON.parse(String(sent.body)), { code: event.detail.code })
  assert.equal(wx.calls.login, 1)
})

test('phone: the real-time verification button (bindgetrealtimephonenumber) is accepted the same way', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url, { realtime: true })
  assertAlicePhone(await gw.phone(event))
  const [sent] = wx.sentTo('/phone')
  assert.deepEqual(Object.keys(JSON.parse(String(sent.body))), ['code'])
})

test('phone: without a session it logs in first, and the number arrives', async () => {
  const wx = installWx({ gateway: gateway.url, user: 'carol' })
  const gw = client()
  // carol has logged in on this phone before (WeChat holds her key), but this client has no session.
  await postJSON(`${gateway.url}/_sandbox/demo/wx.login`, { user: 'carol' })
  const event = await phoneEvent(gateway.url, { user: 'carol', withCode: true })
  const answer = await gw.phone(event)
  assert.equal(answer.countryCode, '86')
  assert.match(answer.phoneNumber, /^13\d{9}$/)
  assert.equal(wx.calls.login, 1)
})

test('phone: when checkSession fails, a fresh login; the old key still opens the data', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url) // encrypted with the key of that login
  wx.sessionValid = false
  assertAlicePhone(await gw.phone(event))
  assert.equal(wx.calls.checkSession, 1)
  assert.equal(wx.calls.login, 2, 'one fresh login')
  const sent = wx.sentTo('/phone')
  assert.equal(sent.length, 1)
  assert.equal(sent[0].header.Authorization.slice(7), /** @type {any} */ (wx.storage.get('wxgate')).token)
  assert.ok(
    gateway.log.some((line) => line.includes('session_key_fallback')),
    'the gateway opened the data with the previous key',
  )
})

test('phone: 401 session_key_stale (WeChat has another key) re-logs in once and resends the unspent code', async () => {
  const wx = installWx({ gateway: gateway.url, app: 'remote' })
  const gw = client('remote')
  await gw.login()
  // the app's own wx.login: WeChat's key is no longer the one the gateway stored
  await new Promise((resolve, reject) => wx.login({ success: resolve, fail: reject }))
  const event = await phoneEvent(gateway.url, { app: 'remote', withCode: true })
  assertAlicePhone(await gw.phone(event))
  assert.equal(wx.calls.login, 3, 'the app\'s wx.login, then one re-login')
  const sent = wx.sentTo('/phone')
  assert.equal(sent.length, 2)
  assert.equal(sent[0].body, sent[1].body, 'the same phone code: the first call did not spend it')
})

test('phone: a masked number (base library below 1.9.1) is phone_masked with the gateway hint', async () => {
  installWx({ gateway: gateway.url, sdkVersion: '1.9.0' })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url, { baseLibrary: '1.9.0' })
  await assert.rejects(gw.phone(event), (/** @type {any} */ e) => {
    assert.ok(e instanceof WxgateError)
    assert.equal(e.code, 'phone_masked')
    assert.equal(e.status, 422)
    assert.match(e.hint, /1\.9\.1/)
    assert.match(String(e.requestId), /^[0-9a-f]{32}$/)
    return true
  })
})

test('phone: a masked number the gateway lets through is still phone_masked', async () => {
  installWx({ gateway: gateway.url, app: 'nomask' })
  const gw = client('nomask')
  await gw.login()
  const event = await phoneEvent(gateway.url, { app: 'nomask', baseLibrary: '1.8.0' })
  await assert.rejects(gw.phone(event), (/** @type {any} */ e) => {
    assert.equal(e.code, 'phone_masked')
    assert.match(e.hint, /1\.9\.1/)
    return true
  })
})

test('userinfo: the wx.getUserProfile result, decrypted and signature-checked by the gateway', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const profile = await userProfile(gateway.url)
  const info = await gw.userinfo(profile)
  assert.equal(info.openId, ALICE_OPENID)
  assert.equal(info.nickName, 'User alice')
  assert.equal('watermark' in info, false)
  const [sent] = wx.sentTo('/userinfo')
  assert.deepEqual(Object.keys(JSON.parse(String(sent.body))).sort(), ['encryptedData', 'iv', 'rawData', 'signature'])
  assert.equal(wx.calls.login, 1)
})

test("the seed's trap: login on one page, login() again elsewhere, then the tap: no second wx.login", async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login() // page A's onLoad
  const event = await phoneEvent(gateway.url) // the user taps: data encrypted with this login's key
  // page B's onShow, and a component, each make sure of a session while the button's answer is on its way
  await Promise.all([gw.login(), gw.login()])
  // the app is started again over the same storage and calls login() once more
  const relaunched = client()
  assert.equal((await relaunched.login()).openid, ALICE_OPENID)
  assert.equal(wx.calls.login, 1, 'the stored token is valid: no wx.login, so WeChat keeps the key')
  assertAlicePhone(await relaunched.phone(event))
  assert.equal(wx.calls.login, 1)
})

test("the seed's trap: the app itself calls wx.login after the data was encrypted; the number arrives", async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url) // encrypted with key K1
  // The page's own code calls wx.login in the button's callback: WeChat (the sandbox) now has K2.
  await new Promise((resolve, reject) => wx.login({ success: resolve, fail: reject }))
  assert.equal(wx.calls.login, 2)
  await gw.login() // elsewhere: the library's session is valid, so it calls no wx.login of its own
  assert.equal(wx.calls.login, 2)
  assertAlicePhone(await gw.phone(event))
  assert.equal(wx.calls.login, 2)
})

test("the seed's trap, the hard way: the app's own wx.login, then an expired session and a fresh login", async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login() // the gateway holds K1
  const event = await phoneEvent(gateway.url) // encrypted with K1
  // The app logs in behind the library's back (K2 at WeChat, never seen by the gateway), and
  // WeChat's checkSession then says no, so the library logs in afresh (K3): the gateway's current
  // key is K3 and its previous one K1, which opens the data.
  await new Promise((resolve, reject) => wx.login({ success: resolve, fail: reject }))
  wx.sessionValid = false
  assertAlicePhone(await gw.phone(event))
  assert.equal(wx.calls.login, 3)
})

test("a wx.login of the app's own before the tap: data under a key the gateway never saw is decrypt_failed", async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  await new Promise((resolve, reject) => wx.login({ success: resolve, fail: reject })) // K2, code thrown away
  const event = await phoneEvent(gateway.url) // encrypted with K2
  await assert.rejects(gw.phone(event), (/** @type {any} */ e) => e.code === 'decrypt_failed' && e.status === 400)
})

test('phone: a cloudID (cloud development) goes alone to the cloudID flow, without checkSession', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url, { cloud: true })
  assert.ok(event.detail.cloudID && event.detail.encryptedData, 'the sandbox gives both')
  assertAlicePhone(await gw.phone(event))
  const sent = wx.sentTo('/phone')
  assert.equal(sent.length, 1)
  assert.deepEqual(JSON.parse(String(sent[0].body)), { cloudID: event.detail.cloudID })
  assert.equal(wx.calls.checkSession, 0, 'a cloudID does not depend on the session_key')
  assert.equal(wx.calls.login, 1)
})

test('phone: the phone code wins over the cloudID, the cloudID over encryptedData', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url, { cloud: true, withCode: true })
  assert.ok(event.detail.code && event.detail.cloudID)
  assertAlicePhone(await gw.phone(event))
  assert.deepEqual(JSON.parse(String(wx.sentTo('/phone')[0].body)), { code: event.detail.code })
})

test('phone: a gateway without the cloudID flow gets the encrypted data instead', async () => {
  const wx = installWx({ gateway: gateway.url, app: 'nocloud' })
  const gw = client('nocloud')
  await gw.login()
  const event = await phoneEvent(gateway.url, { app: 'nocloud', cloud: true })
  assertAlicePhone(await gw.phone(event))
  const sent = wx.sentTo('/phone').map((call) => Object.keys(JSON.parse(String(call.body))).sort())
  assert.deepEqual(sent, [['cloudID'], ['encryptedData', 'iv']])
})

test('phone: WeChat busy at getopendata: the same cloudID is resent after Retry-After and the number arrives', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url, { cloud: true })
  await armFault(gateway.url, { api: 'getopendata', errcode: -1 })
  assertAlicePhone(await gw.phone(event))
  const sent = wx.sentTo('/phone')
  assert.equal(sent.length, 2)
  assert.equal(sent[0].body, sent[1].body, 'a cloudID is not spent by a busy WeChat')
})

test('phone: a cloudID WeChat refuses is cloud_data_failed, not resent', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const event = await phoneEvent(gateway.url, { cloud: true })
  await armFault(gateway.url, { api: 'getopendata', errcode: 40003 })
  await assert.rejects(gw.phone(event), (/** @type {any} */ e) => {
    assert.ok(e instanceof WxgateError)
    assert.equal(e.code, 'cloud_data_failed')
    assert.equal(e.status, 422)
    assert.equal(e.retryable, false)
    return true
  })
  assert.equal(wx.sentTo('/phone').length, 1)
})

test('userinfo: a cloudID goes alone to the cloudID flow', async () => {
  const wx = installWx({ gateway: gateway.url })
  const gw = client()
  await gw.login()
  const profile = await userProfile(gateway.url, 'alice', { cloud: true })
  const info = await gw.userinfo(profile)
  assert.equal(info.openId, ALICE_OPENID)
  assert.equal('watermark' in info, false)
  assert.deepEqual(JSON.parse(String(wx.sentTo('/userinfo')[0].body)), { cloudID: profile.cloudID })
  assert.equal(wx.calls.checkSession, 0)
})

test('userinfo: neither a cloudID nor encryptedData and iv is a TypeError, with no request', async () => {
  const wx = installWx({ gateway: gateway.url })
  await assert.rejects(client().userinfo({ rawData: '{}', signature: 'x' }), TypeError)
  assert.equal(wx.calls.request, 0)
})
