import { baseLibrary, BaseLibrary, promptUpdate, PromptUpdateOptions } from './base'
import { WxgateError } from './errors'
import * as wxp from './wx'

export interface ClientOptions {
  /** The gateway's address, e.g. 'https://api.example.com' (a trailing slash is ignored). */
  baseURL: string
  /** The app's name in the gateway's configuration (the `{app}` in `/v1/{app}/...`). */
  app: string
  /** The wx storage key that keeps the session across launches. Default 'wxgate'. */
  storageKey?: string
  /** Milliseconds for each HTTP request (wx.request's `timeout`). Default 10000. */
  timeout?: number
  /** How often a request is resent when the gateway says `retryable`. Default 2. */
  maxRetries?: number
}

export interface LoginResult {
  openid: string
  /** null when WeChat gives none (the mini program is not bound to an open platform account). */
  unionid: string | null
  /** Seconds the session has left. */
  expires_in: number
}

/** GET /session's answer: `gw.request<SessionInfo>({ path: '/session' })`. */
export interface SessionInfo {
  openid: string
  unionid: string | null
  /** Seconds the session has left. */
  expires_in: number
  /** The number bound to this user, masked, or null when none is: no need to ask again. */
  phone: { masked: string; countryCode: string } | null
}

export interface PhoneResult {
  /** With the country code for numbers outside mainland China, e.g. '13880755743'. */
  phoneNumber: string
  /** Without the country code. */
  purePhoneNumber: string
  /** e.g. '86'. */
  countryCode: string
}

/**
 * The `detail` of the phone-number buttons' events: `bindgetphonenumber` (errMsg
 * 'getPhoneNumber:ok') and `bindgetrealtimephonenumber` (errMsg 'getRealtimePhoneNumber:ok').
 * `WechatMiniprogram.ButtonGetPhoneNumber` from miniprogram-api-typings fits it.
 */
export interface PhoneEventDetail {
  errMsg: string
  /** Base library 2.21.2+: a single-use phone code, redeemed by the gateway. Preferred when present. */
  code?: string
  encryptedData?: string
  iv?: string
  /** Base library 2.8.0+, mini programs with cloud development: exchanged by the gateway. Used when there is no code. */
  cloudID?: string
}

export interface PhoneEvent {
  detail: PhoneEventDetail
}

/**
 * What wx.getUserProfile gives (`WechatMiniprogram.GetUserProfileSuccessCallbackResult` fits it):
 * a `cloudID` (cloud development) or `encryptedData` and `iv`; the cloudID is used when present.
 */
export interface UserProfile {
  encryptedData?: string
  iv?: string
  rawData?: string
  signature?: string
  cloudID?: string
}

/** The gateway's user-info answer: every decrypted field except the watermark. */
export interface UserInfo {
  openId: string
  unionId?: string
  nickName?: string
  avatarUrl?: string
  gender?: number
  language?: string
  city?: string
  province?: string
  country?: string
  [field: string]: unknown
}

export interface RequestOptions {
  /** Relative to `${baseURL}/v1/${app}`, e.g. '/session'. */
  path: string
  /** Default: 'POST' when `data` is given, else 'GET'. */
  method?: 'GET' | 'POST'
  /** Sent as a JSON body (POST only: a GET has no body, and this library puts nothing in URLs). */
  data?: Record<string, unknown>
}

interface Session {
  token: string
  openid: string
  unionid: string | null
  /** Milliseconds since the epoch when the gateway stops accepting the token. */
  expiresAt: number
}

/**
 * The 401s a fresh login cures: the token has ended, or WeChat no longer holds the session_key the
 * gateway stored (`check_session: {remote: true}`). session_required cannot be cured: we sent a token.
 */
const RELOGIN_CODES = ['session_invalid', 'session_expired', 'session_key_stale']
/** A gateway without GET /session answers these: we cannot check a stored token, so we log in afresh. */
const NO_SESSION_ENDPOINT = ['not_found', 'flow_not_configured', 'method_not_allowed']
const PHONE_OK = ['getPhoneNumber:ok', 'getRealtimePhoneNumber:ok']
/** A stored token this close to its end is not worth a round trip. */
const EXPIRY_MARGIN_MS = 30000

export class WxgateClient {
  readonly storageKey: string
  readonly timeout: number
  readonly maxRetries: number
  private readonly base: string
  /** undefined until storage has been read; null when there is no session. */
  private session: Session | null | undefined = undefined
  /** The session in memory was confirmed by the gateway (login or GET /session) in this run. */
  private verified = false
  /** The one login under way, shared by every caller that needs a session meanwhile. */
  private pending: Promise<Session> | null = null

  constructor(options: ClientOptions) {
    if (!options || typeof options.baseURL !== 'string' || !options.baseURL) {
      throw new TypeError('wxgate: baseURL is required')
    }
    if (typeof options.app !== 'string' || !options.app) throw new TypeError('wxgate: app is required')
    this.storageKey = options.storageKey || 'wxgate'
    this.timeout = options.timeout === undefined ? 10000 : options.timeout
    this.maxRetries = options.maxRetries === undefined ? 2 : options.maxRetries
    if (!(this.timeout > 0)) throw new TypeError('wxgate: timeout must be a positive number of milliseconds')
    if (!(this.maxRetries >= 0) || Math.floor(this.maxRetries) !== this.maxRetries) {
      throw new TypeError('wxgate: maxRetries must be a whole number, 0 or more')
    }
    this.base = `${options.baseURL.replace(/\/+$/, '')}/v1/${encodeURIComponent(options.app)}`
  }

  /**
   * A session with the gateway. Cheap to call often: a session confirmed in this run is returned
   * at once, a stored one is confirmed with GET /session (no wx.login), and concurrent callers
   * share one login.
   */
  login(): Promise<LoginResult> {
    return this.establish(false).then(describe)
  }

  /** The user's phone number from the phone-number button's event. */
  async phone(event: PhoneEvent): Promise<PhoneResult> {
    const detail: Partial<PhoneEventDetail> = (event && event.detail) || {}
    const errMsg = typeof detail.errMsg === 'string' ? detail.errMsg : ''
    if (PHONE_OK.indexOf(errMsg) < 0) {
      // Refused or failed on the phone: there is nothing to send, and nothing to retry.
      const denied = /deny|cancel/i.test(errMsg)
      throw new WxgateError({
        code: denied ? 'user_denied' : 'phone_unavailable',
        message: `phone-number button: ${errMsg || 'no errMsg'}`,
        hint: denied
          ? 'The user declined to share the phone number: offer another way on, and do not ask again at once.'
          : 'WeChat gave no number (see the errMsg): the account may have no phone bound, or the mini program has no phone-number quota left.',
      })
    }
    let answer: Record<string, unknown>
    if (detail.code) {
      // The phone code is redeemed with the app's access token: the session_key plays no part.
      answer = await this.send('/phone', { code: detail.code }, await this.usable())
    } else if (detail.cloudID || (detail.encryptedData && detail.iv)) {
      answer = await this.openData('/phone', detail, {})
    } else {
      throw new WxgateError({
        code: 'phone_unavailable',
        message: 'phone-number button: the event has no code, no cloudID, and no encryptedData and iv',
      })
    }
    for (const field of ['phoneNumber', 'purePhoneNumber']) {
      // A gateway configured without mask_guard would pass a masked number on as if it were one.
      if (typeof answer[field] === 'string' && (answer[field] as string).indexOf('*') >= 0) {
        throw new WxgateError({
          code: 'phone_masked',
          message: 'WeChat returned a masked phone number.',
          hint: 'The mini program\'s base library is too old: raise its minimum base library to 1.9.1 or later (2.21.2+ for the phone-code flow).',
          status: 200,
        })
      }
    }
    return answer as unknown as PhoneResult
  }

  /** The user's profile from wx.getUserProfile's result, decrypted and checked by the gateway. */
  async userinfo(profile: UserProfile): Promise<UserInfo> {
    const given: Partial<UserProfile> = profile || {}
    if (!given.cloudID && !(given.encryptedData && given.iv)) {
      throw new TypeError('wxgate: userinfo needs wx.getUserProfile\'s cloudID, or its encryptedData and iv')
    }
    const extra: Record<string, unknown> = {}
    if (typeof given.rawData === 'string' && typeof given.signature === 'string') {
      extra.rawData = given.rawData
      extra.signature = given.signature
    }
    return (await this.openData('/userinfo', given, extra)) as UserInfo
  }

  /** Any call to the gateway with the session's token; a session that has ended is renewed once. */
  request<T = unknown>(options: RequestOptions): Promise<T> {
    const method = options.method || (options.data ? 'POST' : 'GET')
    if (method === 'GET' && options.data) {
      // wx.request would move it into the URL, encoded its own way: refuse rather than guess.
      return Promise.reject(new TypeError('wxgate: a GET request has no data; use POST or put it in path'))
    }
    const path = options.path.charAt(0) === '/' ? options.path : `/${options.path}`
    return this.authed(method, path, method === 'POST' ? options.data || {} : undefined) as Promise<T>
  }

  /** Ends the session at the gateway and forgets it here. Without a session, does nothing. */
  async logout(): Promise<void> {
    if (this.pending) {
      // A login finishing after this would store the session we are ending.
      await this.pending.then(noop, noop)
    }
    const session = this.current()
    if (!session) return
    try {
      await this.exchange('POST', '/logout', {}, session.token)
    } catch (e) {
      if (!(e instanceof WxgateError && e.status === 401)) throw e // 401: already ended; forget it too
    }
    this.forget(session.token)
  }

  /** What this WeChat's base library can do with phone numbers. */
  baseLibrary(): BaseLibrary {
    return baseLibrary()
  }

  /** Asks the user to restart into a downloaded new version; true when the update was applied. */
  promptUpdate(options?: PromptUpdateOptions): Promise<boolean> {
    return promptUpdate(options)
  }

  // --- sessions ------------------------------------------------------------------------------

  private establish(fresh: boolean): Promise<Session> {
    if (this.pending) return this.pending
    const current = this.current()
    if (!fresh && current && this.verified) return Promise.resolve(current)
    const pending = this.connect(fresh ? null : current)
    this.pending = pending
    const done = () => {
      if (this.pending === pending) this.pending = null
    }
    // A failed login rejects everyone waiting on it; the next call starts a new one.
    pending.then(done, done)
    return pending
  }

  private async connect(stored: Session | null): Promise<Session> {
    if (stored) {
      const confirmed = await this.confirm(stored)
      if (confirmed) return confirmed
    }
    this.forget()
    const code = await wxp.login()
    const answer = expectObject(await this.exchange('POST', '/login', { code }), '/login')
    if (typeof answer.token !== 'string' || typeof answer.openid !== 'string') {
      throw unexpected('/login', 'no token or openid')
    }
    return this.keep({
      token: answer.token,
      openid: answer.openid,
      unionid: typeof answer.unionid === 'string' ? answer.unionid : null,
      expiresAt: Date.now() + seconds(answer.expires_in) * 1000,
    })
  }

  /** The stored session as the gateway knows it now, or null when it has ended there. */
  private async confirm(stored: Session): Promise<Session | null> {
    let answer: Record<string, unknown>
    try {
      answer = expectObject(await this.exchange('GET', '/session', undefined, stored.token), '/session')
    } catch (e) {
      if (e instanceof WxgateError && (e.status === 401 || NO_SESSION_ENDPOINT.indexOf(e.code) >= 0)) return null
      throw e
    }
    return this.keep({
      token: stored.token,
      openid: typeof answer.openid === 'string' ? answer.openid : stored.openid,
      unionid: typeof answer.unionid === 'string' ? answer.unionid : null,
      expiresAt: Date.now() + seconds(answer.expires_in) * 1000,
    })
  }

  /** A session to send a request with: the current one unconfirmed (a 401 will renew it), or a login. */
  private usable(): Promise<Session> {
    if (this.pending) return this.pending
    const current = this.current()
    return current ? Promise.resolve(current) : this.establish(false)
  }

  /**
   * The session for sending encrypted open data (phone, user info). The data was encrypted with the
   * session_key WeChat held at the tap, so no wx.login may run first unless WeChat says that key has
   * expired: then the fresh login makes the gateway keep the old key as the previous one, which it
   * tries when the new one does not open the data.
   */
  private async openDataSession(): Promise<Session> {
    if (this.pending) return this.pending
    const current = this.current()
    if (!current) return this.establish(false)
    if (await wxp.checkSession()) return current
    return this.establish(true)
  }

  /** Sends with the session's token; on a 401 that a login cures, logs in once and resends once. */
  private async authed(
    method: 'GET' | 'POST',
    path: string,
    data: Record<string, unknown> | undefined,
    prepared?: Session,
  ): Promise<unknown> {
    const first = prepared || (await this.usable())
    try {
      return await this.exchange(method, path, data, first.token)
    } catch (e) {
      if (!isRelogin(e)) throw e
      this.forget(first.token)
      if (!e.retryable) throw e
    }
    // Every call that met the 401 meanwhile shares this one login (or finds its result in memory).
    const next = await this.establish(false)
    try {
      return await this.exchange(method, path, data, next.token)
    } catch (e) {
      if (isRelogin(e)) this.forget(next.token) // a second 401 is the answer: no loop
      throw e
    }
  }

  /** The session in memory (read from storage the first time), unless it has expired. */
  private current(): Session | null {
    if (this.session === undefined) {
      this.session = readSession(wxp.storageGet(this.storageKey))
      this.verified = false
    }
    if (this.session && this.session.expiresAt - EXPIRY_MARGIN_MS <= Date.now()) this.forget()
    return this.session
  }

  private keep(session: Session): Session {
    this.session = session
    this.verified = true
    wxp.storageSet(this.storageKey, session)
    return session
  }

  /** Drops the session; with a token, only if it is still that one (a newer one must survive). */
  private forget(token?: string): void {
    if (token !== undefined && this.session && this.session.token !== token) return
    this.session = null
    this.verified = false
    wxp.storageRemove(this.storageKey)
  }

  // --- open data -----------------------------------------------------------------------------

  /**
   * Open data (phone or user info) by its cloudID when there is one, else as encryptedData and iv.
   * A cloudID is exchanged by the gateway with the app's access token, so like a phone code it
   * needs no session_key: no checkSession first. A gateway whose configuration has no cloudID
   * flow answers flow_not_configured; then the encrypted data, when the event has it, is sent
   * instead. `extra` goes with the encrypted data only (rawData and signature).
   */
  private async openData(
    path: string,
    given: { cloudID?: string; encryptedData?: string; iv?: string },
    extra: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    const encrypted = given.encryptedData && given.iv ? { encryptedData: given.encryptedData, iv: given.iv } : null
    if (given.cloudID) {
      try {
        return await this.send(path, { cloudID: given.cloudID }, await this.usable())
      } catch (e) {
        if (!(encrypted && e instanceof WxgateError && e.code === 'flow_not_configured')) throw e
      }
    }
    return this.send(path, Object.assign({}, encrypted, extra), await this.openDataSession())
  }

  private async send(path: string, body: Record<string, unknown>, session: Session): Promise<Record<string, unknown>> {
    return expectObject(await this.authed('POST', path, body, session), path)
  }

  // --- HTTP ----------------------------------------------------------------------------------

  /** One call, resent after Retry-After while the gateway says `retryable`, at most maxRetries times. */
  private async exchange(
    method: 'GET' | 'POST',
    path: string,
    data?: Record<string, unknown>,
    token?: string,
  ): Promise<unknown> {
    for (let attempt = 0; ; attempt++) {
      const answer = await wxp.request({ url: this.base + path, method, data, token, timeout: this.timeout })
      if (answer.status >= 200 && answer.status < 300) return answer.data
      const error = gatewayError(answer, `${method} ${path}`)
      const wait = error.retryAfter === null ? 1000 : error.retryAfter * 1000
      // A 401 is the session's business (authed), and single-use codes are never retryable, so
      // only what the gateway itself declares safe to resend is resent. A wait longer than the
      // timeout would leave the user staring at a spinner: the error goes up with its retryAfter.
      if (!error.retryable || error.status === 401 || attempt >= this.maxRetries || wait > this.timeout) throw error
      await wxp.sleep(wait)
    }
  }
}

export function createClient(options: ClientOptions): WxgateClient {
  return new WxgateClient(options)
}

function noop(): void {}

function describe(session: Session): LoginResult {
  return {
    openid: session.openid,
    unionid: session.unionid,
    expires_in: Math.max(0, Math.floor((session.expiresAt - Date.now()) / 1000)),
  }
}

function isRelogin(e: unknown): e is WxgateError {
  return e instanceof WxgateError && e.status === 401 && RELOGIN_CODES.indexOf(e.code) >= 0
}

function seconds(value: unknown): number {
  return typeof value === 'number' && value > 0 ? value : 0
}

function readSession(value: unknown): Session | null {
  if (!isObject(value)) return null
  if (typeof value.token !== 'string' || typeof value.openid !== 'string' || typeof value.expiresAt !== 'number') {
    return null
  }
  return {
    token: value.token,
    openid: value.openid,
    unionid: typeof value.unionid === 'string' ? value.unionid : null,
    expiresAt: value.expiresAt,
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function expectObject(data: unknown, path: string): Record<string, unknown> {
  if (!isObject(data)) throw unexpected(path, 'not a JSON object')
  return data
}

function unexpected(path: string, what: string, status = 200): WxgateError {
  return new WxgateError({
    code: 'network',
    message: `${path}: unexpected answer (HTTP ${status}, ${what}): not from wxgate?`,
    hint: 'Check that baseURL points at the wxgate gateway and not at a proxy\'s error page.',
    status,
  })
}

function gatewayError(answer: wxp.Answer, what: string): WxgateError {
  const requestId = wxp.headerValue(answer.header, 'X-Request-Id')
  const after = parseFloat(wxp.headerValue(answer.header, 'Retry-After') || '')
  const retryAfter = isFinite(after) && after >= 0 ? after : null
  const body = answer.data
  const error = isObject(body) && isObject(body.error) ? body.error : null
  if (!error || typeof error.code !== 'string') {
    const e = unexpected(what, 'no wxgate error body', answer.status)
    return new WxgateError({ code: e.code, message: e.message, hint: e.hint, status: e.status, requestId, retryAfter })
  }
  return new WxgateError({
    code: error.code,
    message: typeof error.message === 'string' ? error.message : error.code,
    hint: typeof error.hint === 'string' ? error.hint : '',
    status: answer.status,
    retryable: error.retryable === true,
    requestId,
    retryAfter,
  })
}
