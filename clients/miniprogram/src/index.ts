export { createClient, WxgateClient } from './client'
export type {
  ClientOptions,
  LoginResult,
  PhoneEvent,
  PhoneEventDetail,
  PhoneResult,
  RequestOptions,
  SessionInfo,
  UserInfo,
  UserProfile,
} from './client'
export { WxgateError, GATEWAY_ERROR_CODES, CLIENT_ERROR_CODES } from './errors'
export type { ClientErrorCode, ErrorCode, GatewayErrorCode, WxgateErrorFields } from './errors'
export type { BaseLibrary, PromptUpdateOptions } from './base'
