// @ts-check
// docs/miniprogram.md stays true: every public method and every error code is documented,
// and what the docs say is resent agrees with the gateway's own error table (README.md,
// which the Python suite checks against gateway/errors.py).
'use strict'

const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { test } = require('node:test')
const { WxgateClient, GATEWAY_ERROR_CODES, CLIENT_ERROR_CODES } = require('..')

const ROOT = path.resolve(__dirname, '..', '..', '..')
const GUIDE = fs.readFileSync(path.join(ROOT, 'docs', 'miniprogram.md'), 'utf8')
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')

/**
 * The text from a heading (any level) to the next heading of the same or a higher level.
 * @param {string} text
 * @param {string} heading
 */
function section(text, heading) {
  const lines = text.split('\n')
  const start = lines.findIndex((line) => /^#+ /.test(line) && line.replace(/^#+ /, '') === heading)
  assert.ok(start >= 0, `no heading ${heading}`)
  const level = (lines[start].match(/^#+/) || [''])[0].length
  const end = lines.findIndex((line, i) => i > start && /^#+ /.test(line) && (line.match(/^#+/) || [''])[0].length <= level)
  return lines.slice(start + 1, end < 0 ? undefined : end).join('\n')
}

/** Table rows keyed by the backticked name in their first cell. */
function rows(/** @type {string} */ text) {
  /** @type {Map<string, string[]>} */
  const found = new Map()
  for (const line of text.split('\n')) {
    const cells = line.trim().replace(/^\||\|$/g, '').split('|').map((cell) => cell.trim())
    const name = /^`([^`]+)`$/.exec(cells[0] || '')
    if (line.startsWith('|') && name) found.set(name[1], cells)
  }
  found.delete('code') // the header row
  return found
}

test('every public method of the client has its own heading', () => {
  const methods = Object.getOwnPropertyNames(WxgateClient.prototype).filter(
    (name) => name !== 'constructor' && !['establish', 'connect', 'confirm', 'usable', 'openDataSession', 'openData', 'send', 'authed', 'current', 'keep', 'forget', 'exchange'].includes(name),
  )
  assert.deepEqual(methods.sort(), ['baseLibrary', 'login', 'logout', 'phone', 'promptUpdate', 'request', 'userinfo'])
  for (const name of methods) assert.match(GUIDE, new RegExp(`^### \`gw\\.${name}\\(`, 'm'), name)
})

test('every error code has a row: the client\'s and the gateway\'s', () => {
  const client = rows(section(GUIDE, 'The client\'s codes (`CLIENT_ERROR_CODES`)'))
  assert.deepEqual([...client.keys()].sort(), [...CLIENT_ERROR_CODES].sort())
  const gateway = rows(section(GUIDE, 'The gateway\'s codes (`GATEWAY_ERROR_CODES`)'))
  assert.deepEqual([...gateway.keys()].sort(), [...GATEWAY_ERROR_CODES].sort())
})

test('"Resent" in the guide follows the gateway\'s retryable column', () => {
  const guide = rows(section(GUIDE, 'The gateway\'s codes (`GATEWAY_ERROR_CODES`)'))
  const table = rows(section(README, 'Errors'))
  for (const code of GATEWAY_ERROR_CODES) {
    const readme = table.get(code)
    assert.ok(readme, `README.md's error table has no ${code}`)
    // session_required: the client always sends a token, so no login cures it
    const expected = readme[4] === 'yes' && code !== 'session_required'
    const resent = !(guide.get(code) || [])[2].startsWith('no')
    assert.equal(resent, expected, `${code}: the guide says "${(guide.get(code) || [])[2]}", README.md "${readme[4]}"`)
    assert.equal((guide.get(code) || [])[1], readme[1], `${code}: HTTP status`)
  }
})
