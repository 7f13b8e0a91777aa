// One client for the whole mini program, so that every page shares its session and its
// in-flight login. In production the address must be HTTPS and in the mini program's
// "request" domain list; the developer tools' "do not verify domains" allows this one.
const { createClient } = require('wxgate-miniprogram')

module.exports = createClient({ baseURL: 'http://127.0.0.1:8080', app: 'demo' })
