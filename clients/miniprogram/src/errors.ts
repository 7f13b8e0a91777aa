/**
 * Every `error.code` the gateway can answer with, as published in its `/openapi.json`
 * (`components.schemas.Error.properties.error.properties.code.enum`). A test compares
 * this list with a running gateway's, so the two cannot drift apart unnoticed.
 */
export const GATEWAY_ERROR_CODES = [
  'admin_token_required',
  'bad_request',
  'body_timeout',
  'body_too_large',
  'cloud_data_failed',
  'code_used',
  'decrypt_failed',
  'flow_not_configured',
  'internal_error',
  'invalid_code',
  'invalid_encrypted_data',
  'invalid_field',
  'invalid_json',
  'invalid_phone_code',
  'method_not_allowed',
  'missing_field',
  'not_found',
  'phone_masked',
  'pipeline_timeout',
  'rate_limited',
  'replayed',
  'session_expired',
  'session_invalid',
  'session_key_stale',
  'session_required',
  'signature_mismatch',
  'step_failed',
  'storage_unavailable',
  'unexpected_payload',
  'unknown_app',
  'unprocessable',
  'upstream_busy',
  'upstream_circuit_open',
  'upstream_credentials_rejected',
  'upstream_error',
  'upstream_rate_limited',
  'upstream_timeout',
  'upstream_unreachable',
  'user_blocked',
  'watermark_appid_mismatch',
  'watermark_expired',
] as const

/**
 * Codes this library raises itself, without an answer from the gateway:
 * - `user_denied`: the user refused or cancelled the phone-number button;
 * - `phone_unavailable`: the button failed for any other reason (no phone bound, quota, old WeChat);
 * - `network`: no answer (offline, DNS, timeout, `wx.login` failed), or an answer that did not come
 *   from wxgate (a proxy's error page).
 */
export const CLIENT_ERROR_CODES = ['user_denied', 'phone_unavailable', 'network'] as const

export type GatewayErrorCode = (typeof GATEWAY_ERROR_CODES)[number]
export type ClientErrorCode = (typeof CLIENT_ERROR_CODES)[number]
/** A gateway newer than this library may add codes, so any string is possible. */
export type ErrorCode = GatewayErrorCode | ClientErrorCode | (string & {})

export interface WxgateErrorFields {
  code: ErrorCode
  message: string
  hint?: string
  status?: number
  retryable?: boolean
  requestId?: string | null
  retryAfter?: number | null
}

/** Every failure of this library: the gateway's error answers and the client's own. */
export class WxgateError extends Error {
  /** Stable: act on this. `message` and `hint` are for people. */
  readonly code: ErrorCode
  /** What to do about it, in the gateway's words ('' when there is nothing to add). */
  readonly hint: string
  /** The HTTP status, or 0 when no answer came from the gateway. */
  readonly status: number
  /** The gateway said the same request may be sent again unchanged (false when it did not say). */
  readonly retryable: boolean
  /** The answer's `X-Request-Id`: quote it when asking the gateway's operators. */
  readonly requestId: string | null
  /** Seconds from the answer's `Retry-After` header (429 and 503), else null. */
  readonly retryAfter: number | null

  constructor(fields: WxgateErrorFields) {
    super(fields.message)
    this.name = 'WxgateError'
    this.code = fields.code
    this.hint = fields.hint || ''
    this.status = fields.status || 0
    this.retryable = fields.retryable === true
    this.requestId = fields.requestId || null
    this.retryAfter = fields.retryAfter === undefined ? null : fields.retryAfter
  }
}
