"""The one exception hierarchy of wxgate, and the one table mapping it to HTTP.

Every error a client can see is a :class:`GatewayError` subclass with a fixed HTTP
status and a stable machine ``code``; the ``message`` and ``hint`` are for humans.
``log_detail`` is for the log only and never reaches the client (Tornado's
``HTTPError`` makes the same split). WeChat's errcodes are mapped here too, so a
reader finds every client-visible outcome in this file.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error that stops a flow and becomes a JSON error body."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    message: ClassVar[str] = "The gateway failed to handle the request."
    hint: ClassVar[str] = "Retry later; if it persists, report the request id to the operators."
    retry_after: ClassVar[int | None] = None
    # Whether resending the same request can succeed, provided nothing single-use (a
    # wx.login or phone code, replay-checked data) was spent before the error: the flow
    # engine clears it when a step that spends one has run (Step.single_use).
    retryable: ClassVar[bool] = False
    # Raised before the failing call could consume its single-use input (WeChat said
    # busy, the circuit or a rate limit stopped it): that step spent nothing.
    spent_nothing: ClassVar[bool] = False
    # The WWW-Authenticate header of a 401 that asks for credentials of this kind.
    challenge: ClassVar[str | None] = None

    def __init__(
        self,
        message: str | None = None,
        *,
        hint: str | None = None,
        log_detail: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.client_message = message or self.message
        self.client_hint = hint if hint is not None else self.hint
        self.log_detail = log_detail
        self.client_retry_after = retry_after if retry_after is not None else self.retry_after
        super().__init__(self.client_message)

    def body(self, retryable: bool | None = None) -> dict[str, Any]:
        """The client's error body; ``retryable`` overrides the class's when the flow
        knows that something single-use was spent."""
        return {
            "error": {
                "code": self.code,
                "message": self.client_message,
                "hint": self.client_hint,
                "retryable": self.retryable if retryable is None else retryable,
            }
        }


# --- 400: the request itself is wrong -------------------------------------------------


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"
    message = "The request is malformed."
    hint = "Check the request against the API reference in the README."


class InvalidJSON(BadRequest):
    code = "invalid_json"
    message = "The request body is not a JSON object."
    hint = "Send a JSON object with Content-Type: application/json, or form fields."


class MissingField(BadRequest):
    code = "missing_field"
    message = "A required field is missing."
    hint = "Send the field named in the message as a query, form or JSON field."


class InvalidField(BadRequest):
    code = "invalid_field"
    message = "A field has the wrong type or format."
    hint = "Fields are strings; see the API reference for each field's format."


class InvalidEncryptedData(BadRequest):
    code = "invalid_encrypted_data"
    message = "encryptedData or iv is not valid base64 of the expected length."
    hint = (
        "Send encryptedData and iv exactly as the mini program received them, in a POST JSON "
        "body; in a URL, encode them once (percent-encoding applied twice is repaired)."
    )


class DecryptFailed(BadRequest):
    # One error for every way decryption can fail (padding, UTF-8, JSON), so the
    # answer is no padding oracle.
    code = "decrypt_failed"
    message = "The encrypted data could not be decrypted with this user's session key."
    hint = (
        "The session_key probably changed: call wx.login and the gateway's login before "
        "getPhoneNumber, not inside its callback, or use wx.checkSession there."
    )


class SignatureMismatch(BadRequest):
    code = "signature_mismatch"
    message = "signature does not match rawData for this user's session key."
    hint = "Send rawData and signature exactly as wx.getUserProfile returned them."


class InvalidCode(BadRequest):
    code = "invalid_code"
    message = "The login code is invalid or expired."
    hint = "Call wx.login again and send the new code within 5 minutes; codes are per appid."


class InvalidPhoneCode(BadRequest):
    code = "invalid_phone_code"
    message = "The phone code is invalid, expired, already used, or another user's."
    hint = "Send the code from the getPhoneNumber button's event (e.detail.code) once, within 5 minutes."


class BodyTimeout(GatewayError):
    status = 408
    code = "body_timeout"
    message = "The request body did not arrive in time."
    hint = "Send the whole body with the request; wxgate requests are small JSON objects."
    retryable = True  # the flow never started


class BodyTooLarge(GatewayError):
    status = 413
    code = "body_too_large"
    message = "The request body is too large."
    hint = "wxgate requests are small JSON objects; check what the client sends."

    @classmethod
    def over(cls, limit: int) -> BodyTooLarge:
        return cls(f"The request body is over {limit} bytes.")


# --- 401 / 403 / 404 / 405 / 409 ---------------------------------------------------------


class Unauthorized(GatewayError):
    status = 401
    code = "session_required"
    message = "This call needs a session token."
    hint = "Log in at /v1/{app}/login and send 'Authorization: Bearer <token>'."
    retryable = True  # after a fresh login; the client logs in again and resends once


class AdminTokenRequired(Unauthorized):
    code = "admin_token_required"
    message = "This admin endpoint needs the admin token."
    hint = "Send 'Authorization: Bearer <server.admin.token>' (the console page asks for it)."
    retryable = False  # resending without the right token cannot succeed
    challenge = 'Bearer realm="wxgate-admin"'

    @classmethod
    def not_accepted(cls) -> AdminTokenRequired:
        """A bearer token was sent, and it is not server.admin.token (same code: the caller fixes the token)."""
        return cls(
            "The admin token was not accepted.",
            hint="Send the token set in server.admin.token, as 'Authorization: Bearer <token>'.",
        )


class SessionInvalid(Unauthorized):
    code = "session_invalid"
    message = "The session token is unknown."
    hint = "Log in again at /v1/{app}/login to get a new token."


class SessionExpired(Unauthorized):
    code = "session_expired"
    message = "The session token has expired."
    hint = "Call wx.login and log in again at /v1/{app}/login."


class SessionKeyStale(Unauthorized):
    code = "session_key_stale"
    message = "WeChat no longer accepts this user's session key."
    hint = "Call wx.login and log in again at /v1/{app}/login, then retry."


class UserBlocked(GatewayError):
    status = 403
    code = "user_blocked"
    message = "WeChat refused this user as high-risk."
    hint = "WeChat errcode 40226: the user must resolve it with WeChat; do not retry."


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    message = "No such endpoint."
    hint = (
        "Endpoints are POST /v1/{app}/login, /v1/{app}/phone, /v1/{app}/userinfo, /v1/{app}/logout "
        "and GET /v1/{app}/session."
    )


class UnknownApp(NotFound):
    code = "unknown_app"
    message = "No app of that name is configured."
    hint = "Use an app name from the gateway's configuration (apps: ...)."


class FlowNotConfigured(NotFound):
    code = "flow_not_configured"
    message = "This flow is not configured for this app."
    hint = "Add the flow under pipelines: in the gateway's configuration."


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    message = "This endpoint does not accept that method."
    hint = "See the API reference in the README for each endpoint's methods."


class CodeUsed(GatewayError):
    status = 409
    code = "code_used"
    message = "The login code has already been used."
    hint = "Codes are single-use: call wx.login for a fresh code; never resend one."


# --- 422: decrypted, but not acceptable ---------------------------------------------------


class Unprocessable(GatewayError):
    status = 422
    code = "unprocessable"
    message = "The decrypted data is not acceptable."
    hint = "See the message for what was wrong."


class WatermarkMismatch(Unprocessable):
    code = "watermark_appid_mismatch"
    message = "The data was produced for another appid."
    hint = "The mini program and the gateway app must use the same appid."


class WatermarkExpired(Unprocessable):
    code = "watermark_expired"
    message = "The data's watermark is too old (or from the future)."
    hint = "Send encrypted data right after getPhoneNumber returns it; check the server clock."


class Replayed(Unprocessable):
    code = "replayed"
    message = "This encrypted data was already accepted once."
    hint = "Call getPhoneNumber again for fresh data; the gateway refuses replays."


class PhoneMasked(Unprocessable):
    code = "phone_masked"
    message = "WeChat returned a masked phone number."
    hint = (
        "The mini program's base library is too old: raise its minimum base library to "
        "1.9.1 or later (2.21.2+ for the phone-code flow)."
    )


class UnexpectedPayload(Unprocessable):
    code = "unexpected_payload"
    message = "The decrypted data is not of the expected kind."
    hint = "Send phone data to /phone and user info to /userinfo."


class CloudDataFailed(Unprocessable):
    # WeChat documents one errcode for getopendata (40003, invalid openid) and no finer
    # ones, so every refusal of a cloudID is this one code; the errcode goes to the log.
    code = "cloud_data_failed"
    message = "WeChat gave no data for this cloudID."
    hint = (
        "Send the cloudID from the event once, within 5 minutes, with the token of the user who tapped; "
        "for a fresh one, ask the user again."
    )


# --- 429 / 5xx: WeChat or the gateway in trouble ------------------------------------------


class UpstreamRateLimited(GatewayError):
    status = 429
    code = "upstream_rate_limited"
    message = "WeChat's frequency limit was reached."
    hint = "Back off and retry later (WeChat errcode 45011 / 45009)."
    retry_after = 60
    retryable = True
    spent_nothing = True


class RateLimited(GatewayError):
    status = 429
    code = "rate_limited"
    message = "Too many requests."
    hint = "Wait for the number of seconds in Retry-After before trying again."
    retryable = True
    spent_nothing = True


class StepFailed(GatewayError):
    status = 500
    code = "step_failed"
    message = "A pipeline step failed unexpectedly."
    hint = "The operators can find the step and plugin in the log by the request id."


class UpstreamError(GatewayError):
    status = 502
    code = "upstream_error"
    message = "WeChat answered with an unexpected error."
    hint = "Retry later; the operators can see WeChat's errcode in the log."


class UpstreamUnreachable(UpstreamError):
    code = "upstream_unreachable"
    message = "The WeChat API could not be reached."
    hint = "Retry later; the operators should check the gateway's network and upstream URL."


class UpstreamCredentialsRejected(UpstreamError):
    code = "upstream_credentials_rejected"
    message = "WeChat rejected the gateway's app credentials."
    hint = "The operators must check this app's appid and secret."


class UpstreamBusy(GatewayError):
    status = 503
    code = "upstream_busy"
    message = "WeChat is busy."
    hint = "Retry in a moment; WeChat did not use up the code (errcode -1), so the same request may be resent."
    retry_after = 2
    retryable = True
    spent_nothing = True


class StorageUnavailable(GatewayError):
    status = 503
    code = "storage_unavailable"
    message = "The gateway's storage is unavailable."
    hint = "Retry after the number of seconds in Retry-After; nothing was half-written."
    retry_after = 5
    retryable = True


class PipelineTimeout(GatewayError):
    status = 504
    code = "pipeline_timeout"
    message = "The request took too long inside the gateway."
    hint = "Retry later; the operators can see which step was running in the log."


class UpstreamCircuitOpen(GatewayError):
    status = 503
    code = "upstream_circuit_open"
    message = "WeChat has been failing; the gateway is not calling it for a moment."
    hint = "Retry after the number of seconds in Retry-After."
    retry_after = 10
    retryable = True
    spent_nothing = True


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"
    message = "WeChat did not answer in time."
    hint = "Retry later with a fresh wx.login code."


class ConfigError(Exception):
    """A configuration file is invalid; never an HTTP answer, the gateway refuses to start."""


# WeChat errcode -> error class, for every API the gateway calls. Token errcodes
# (40001/40014/42001) are handled by the client before they get here.
WECHAT_ERRCODES: dict[int, type[GatewayError]] = {
    -1: UpstreamBusy,
    40029: InvalidCode,
    40163: CodeUsed,
    45011: UpstreamRateLimited,
    45009: UpstreamRateLimited,
    40226: UserBlocked,
    40125: UpstreamCredentialsRejected,
    40013: UpstreamCredentialsRejected,
    87009: SessionKeyStale,
}


# Errcodes that mean the same at every API: WeChat busy, frequency limits, the app's credentials.
APP_WIDE_ERRCODES = frozenset({-1, 45009, 45011, 40013, 40125})


def error_for_errcode(errcode: int, errmsg: str, api: str, otherwise: type[GatewayError] | None = None) -> GatewayError:
    """``otherwise``: the class of every errcode but the app-wide ones, for an API whose
    own errcodes all mean one thing to the client (getopendata: cloud_data_failed)."""
    if otherwise is not None and errcode not in APP_WIDE_ERRCODES:
        cls = otherwise
    else:
        cls = WECHAT_ERRCODES.get(errcode, UpstreamError)
    return cls(log_detail=f"{api}: errcode {errcode} {errmsg}")


def all_error_classes() -> list[type[GatewayError]]:
    """Every public error class defined in this module (bases included: they are raised
    too), for the README table and the OpenAPI document."""
    seen: list[type[GatewayError]] = []
    stack: list[type[GatewayError]] = [GatewayError]
    while stack:
        cls = stack.pop(0)
        if cls.__module__ == __name__ and not cls.__name__.startswith("_"):
            seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
