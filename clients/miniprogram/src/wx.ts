// Promise wrappers over the callback APIs. Callbacks rather than the promise forms, because
// the promise forms exist only from base library 2.10.2 on, and `wx` is looked up at each call
// (never captured at load) so the library works with whatever `wx` the runtime provides.
import { WxgateError } from './errors'

export interface Answer {
  status: number
  data: unknown
  header: Record<string, unknown>
}

export interface Send {
  url: string
  method: 'GET' | 'POST'
  data?: Record<string, unknown>
  token?: string
  timeout: number
}

export function request(send: Send): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const header: Record<string, string> = { 'content-type': 'application/json' }
    if (send.token) header.Authorization = `Bearer ${send.token}`
    const options: WechatMiniprogram.RequestOption = {
      url: send.url,
      method: send.method,
      header,
      timeout: send.timeout,
      // Our own parsing: an empty 204 or a proxy's HTML page must not break the JSON reader.
      dataType: 'text',
      responseType: 'text',
      success: (res) => resolve({ status: res.statusCode, data: parse(res.data), header: res.header || {} }),
      fail: (err) =>
        reject(
          new WxgateError({
            code: 'network',
            message: `${send.method} ${send.url}: ${(err && err.errMsg) || 'request failed'}`,
            hint: 'Check the network and that the gateway address is in the mini program\'s request domain list.',
          }),
        ),
    }
    // Only a POST has a body: wx.request would put a GET's data in the query string, where
    // encrypted data gets encoded twice or has its '+' read as a space.
    if (send.method === 'POST') options.data = JSON.stringify(send.data || {})
    wx.request(options)
  })
}

function parse(data: unknown): unknown {
  if (typeof data !== 'string') return data
  if (data === '') return null
  try {
    return JSON.parse(data)
  } catch (e) {
    return data
  }
}

export function login(): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    wx.login({
      success: (res) =>
        res.code
          ? resolve(res.code)
          : reject(new WxgateError({ code: 'network', message: `wx.login gave no code: ${res.errMsg}` })),
      fail: (err) =>
        reject(new WxgateError({ code: 'network', message: `wx.login failed: ${(err && err.errMsg) || ''}` })),
    })
  })
}

/** Whether WeChat still holds the session_key of the last wx.login. */
export function checkSession(): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    wx.checkSession({ success: () => resolve(true), fail: () => resolve(false) })
  })
}

export function sleep(ms: number): Promise<void> {
  return new Promise<void>((resolve) => {
    setTimeout(resolve, ms)
  })
}

export function storageGet(key: string): unknown {
  try {
    return wx.getStorageSync(key)
  } catch (e) {
    return undefined // a storage that cannot be read is as good as an empty one: we log in again
  }
}

export function storageSet(key: string, value: unknown): void {
  try {
    wx.setStorageSync(key, value)
  } catch (e) {
    // Storage full or unavailable: the session still lives in memory for this run.
  }
}

export function storageRemove(key: string): void {
  try {
    wx.removeStorageSync(key)
  } catch (e) {
    // Nothing to do: a token we failed to remove is refused by the gateway later anyway.
  }
}

/** A response header by name, whatever case the platform gives it in (iOS and Android differ). */
export function headerValue(header: Record<string, unknown>, name: string): string | null {
  const wanted = name.toLowerCase()
  for (const key of Object.keys(header)) {
    if (key.toLowerCase() === wanted) {
      const value = header[key]
      return value === undefined || value === null ? null : String(value)
    }
  }
  return null
}
