// @ts-check
// What runs without a gateway: the base library's abilities, the update prompt, the package's shape.
'use strict'

const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { test } = require('node:test')
const { createClient } = require('..')
const { installWx } = require('./support')

const gw = () => createClient({ baseURL: 'http://127.0.0.1:9', app: 'demo' })

for (const [version, expected] of /** @type {const} */ ([
  ['3.4.1', { phoneCode: true, encryptedPhone: true, maskedPhone: false }],
  ['2.21.2', { phoneCode: true, encryptedPhone: true, maskedPhone: false }],
  ['2.21.1', { phoneCode: false, encryptedPhone: true, maskedPhone: false }],
  ['2.9.10', { phoneCode: false, encryptedPhone: true, maskedPhone: false }],
  ['1.9.1', { phoneCode: false, encryptedPhone: true, maskedPhone: false }],
  ['1.9.0', { phoneCode: false, encryptedPhone: true, maskedPhone: true }],
  ['1.2.0', { phoneCode: false, encryptedPhone: true, maskedPhone: true }],
  ['1.1.1', { phoneCode: false, encryptedPhone: false, maskedPhone: true }],
])) {
  test(`baseLibrary: ${version}`, () => {
    installWx({ gateway: 'http://127.0.0.1:9', sdkVersion: version })
    assert.deepEqual(gw().baseLibrary(), { version, ...expected })
  })
}

test('baseLibrary: getSystemInfoSync where getAppBaseInfo does not exist (before 2.20.1)', () => {
  const wx = installWx({ gateway: 'http://127.0.0.1:9', sdkVersion: '2.10.4' })
  Object.assign(wx, { getAppBaseInfo: undefined })
  assert.deepEqual(gw().baseLibrary(), {
    version: '2.10.4',
    phoneCode: false,
    encryptedPhone: true,
    maskedPhone: false,
  })
})

test('promptUpdate: an update ready and confirmed is applied; resolves true', async () => {
  const wx = installWx({ gateway: 'http://127.0.0.1:9' })
  wx.update = { hasUpdate: true, confirm: true }
  assert.equal(await gw().promptUpdate({ title: 'New version', content: 'Restart now?' }), true)
  assert.equal(wx.calls.applyUpdate, 1)
  assert.equal(wx.modals.length, 1)
  assert.equal(wx.modals[0].title, 'New version')
  assert.equal(wx.modals[0].content, 'Restart now?')
  assert.equal(wx.modals[0].showCancel, true)
})

test('promptUpdate: declined, nothing is applied; resolves false; default texts', async () => {
  const wx = installWx({ gateway: 'http://127.0.0.1:9' })
  wx.update = { hasUpdate: true, confirm: false }
  assert.equal(await gw().promptUpdate(), false)
  assert.equal(wx.calls.applyUpdate, 0)
  assert.equal(wx.modals[0].title, '更新提示')
  assert.equal(wx.modals[0].content, '新版本已经准备好，是否重启应用？')
})

test('promptUpdate: force hides the cancel button', async () => {
  const wx = installWx({ gateway: 'http://127.0.0.1:9' })
  wx.update = { hasUpdate: true, confirm: true }
  assert.equal(await gw().promptUpdate({ force: true, confirmText: '重启' }), true)
  assert.equal(wx.modals[0].showCancel, false)
  assert.equal(wx.modals[0].confirmText, '重启')
})

test('promptUpdate: no update, or a failed download, resolves false without asking', async () => {
  const wx = installWx({ gateway: 'http://127.0.0.1:9' })
  assert.equal(await gw().promptUpdate(), false)
  wx.update = { hasUpdate: true, ready: false }
  assert.equal(await gw().promptUpdate(), false)
  assert.equal(wx.calls.showModal, 0)
  assert.equal(wx.calls.applyUpdate, 0)
})

test('the package: no runtime dependencies, built for the developer tools, no Node built-ins', () => {
  const root = path.resolve(__dirname, '..')
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
  assert.equal(pkg.name, 'wxgate-miniprogram')
  assert.equal(pkg.main, 'dist/index.js')
  assert.equal(pkg.miniprogram, 'dist')
  assert.equal(pkg.types, 'dist/index.d.ts')
  assert.equal(pkg.dependencies, undefined)
  assert.match(pkg.devDependencies.typescript, /^~5\./)
  const dist = path.join(root, 'dist')
  for (const file of fs.readdirSync(dist).filter((f) => f.endsWith('.js'))) {
    const text = fs.readFileSync(path.join(dist, file), 'utf8')
    for (const match of text.matchAll(/require\("([^"]+)"\)/g)) {
      assert.match(match[1], /^\.\//, `${file} requires ${match[1]}: only its own files`)
    }
    assert.doesNotMatch(text, /wx\.request\s*=|process\.|Buffer\b/, `${file} touches wx.request or Node`)
  }
})

test('wx.request is used, never replaced', async () => {
  const wx = installWx({ gateway: 'http://127.0.0.1:9' })
  wx.codeSource = async () => 'a-code'
  const original = wx.request
  await gw().login().catch(() => null)
  assert.equal(wx.request, original)
  assert.ok(wx.calls.request >= 1)
})
