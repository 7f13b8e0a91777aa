"""YAML configuration: environment interpolation, typed validation, precise errors.

The file is composed into YAML nodes first so that every key keeps its line; pydantic
then validates the structure and each step's options, and every error it reports is
mapped back to ``file:line: key: what was expected``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from gateway.errors import ConfigError
from gateway.event_loop import EventLoopChoice, uvloop_installed
from gateway.flow_names import DEFAULT_PIPELINES, FlowName, RawStep
from gateway.pipeline_check import check_pipelines
from gateway.registry import Registry
from gateway.step import Step, StepOptions
from gateway.storage import Storage, StorageOptions

# config/gateway.yaml of a checkout; an installed wheel carries it as gateway/bundled/gateway.yaml (setup.cfg)
_DEFAULT_PLACES = (
    Path(__file__).resolve().parent / "bundled" / "gateway.yaml",
    Path(__file__).resolve().parent.parent / "config" / "gateway.yaml",
)
DEFAULT_CONFIG = next((p for p in _DEFAULT_PLACES if p.is_file()), _DEFAULT_PLACES[1])

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

Path_ = tuple[str | int, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    log_format: Literal["console", "json"] = "console"
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    request_timeout: float = Field(30.0, gt=0, le=600, description="Bound on one request's whole pipeline.")
    pid_file: str | None = Field(None, description="Where serve writes its pid, for `wxgate reload`.")
    watch_config: bool = Field(False, description="Reload when the configuration file changes.")
    header_timeout: float = Field(10.0, gt=0, le=600, description="Seconds for a request line and its headers.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Proxies (CIDRs) whose X-Forwarded-For / X-Real-Ip give the client address.",
    )
    admin: AdminConfig | None = Field(None, description="A second socket for /metrics, /readyz and /healthz.")
    event_loop: EventLoopChoice = Field(
        "auto", description="auto (uvloop when installed), uvloop or asyncio; read at start."
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_keys(cls, data: object) -> object:
        # refused at its own key (so at its line), not as an unknown key: the message says what replaces it
        if isinstance(data, dict) and "trust_proxy_headers" in data:
            message = (
                "trust_proxy_headers is replaced by server.trusted_proxies: list the proxies that may set "
                "X-Forwarded-For, e.g. trusted_proxies: [127.0.0.1/32] (headers from any other peer are ignored)"
            )
            error = InitErrorDetails(
                type=PydanticCustomError("replaced_key", message),
                loc=("trust_proxy_headers",),
                input=data["trust_proxy_headers"],
            )
            raise ValidationError.from_exception_data(cls.__name__, [error])
        return data

    @field_validator("event_loop")
    @classmethod
    def _loop_installed(cls, value: EventLoopChoice) -> EventLoopChoice:
        if value == "uvloop" and not uvloop_installed():
            raise ValueError("uvloop is not installed: pip install uvloop, or set event_loop: auto (or asyncio)")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(str(item), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or CIDR such as 10.0.0.0/8") from None
        return value


class AdminConfig(_Strict):
    """The admin listener: operations endpoints on a socket of their own."""

    host: str = "127.0.0.1"
    port: int = Field(8081, ge=0, le=65535)
    token: SecretStr = Field(SecretStr(""), description="Bearer token for /metrics and /admin/api/ (empty: none).")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> AdminConfig:
        if not self.token.get_secret_value() and not is_loopback(self.host):
            raise ValueError(
                f"admin host {self.host!r} is not a loopback address and no token is set: set "
                'token: "${WXGATE_ADMIN_TOKEN}" (quoted, at least 16 characters) or bind to 127.0.0.1'
            )
        if self.token.get_secret_value() and len(self.token.get_secret_value()) < 16:
            raise ValueError("the admin token must be at least 16 characters")
        return self


class StorageConfig(_Strict):
    plugin: str = "memory"
    options: dict[str, Any] = Field(default_factory=dict)


class AppConfig(_Strict):
    name: str = ""
    appid: str = Field(min_length=3, max_length=64)
    secret: SecretStr
    upstream: str = Field(description="'sandbox', or WeChat's base URL: https://api.weixin.qq.com")
    timeout: float = Field(5.0, gt=0, le=60)
    circuit_failures: int = Field(5, ge=1, le=1000, description="Consecutive upstream failures that open the circuit.")
    circuit_cooldown: float = Field(10.0, gt=0, le=600, description="Seconds the circuit stays open.")
    pipelines: dict[FlowName, list[RawStep]] = Field(default_factory=dict)

    @field_validator("secret")
    @classmethod
    def _secret_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the app secret is empty; set it (e.g. secret: ${MY_APP_SECRET})")
        return value

    @field_validator("upstream")
    @classmethod
    def _upstream_shape(cls, value: str) -> str:
        if value == "sandbox" or re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            return value.rstrip("/")
        raise ValueError("expected 'sandbox' or a base URL such as https://api.weixin.qq.com")

    @property
    def uses_sandbox(self) -> bool:
        return self.upstream == "sandbox"


class EndpointConfig(_Strict):
    """A webhook receiver. An empty ``url`` disables it, so ``url: ${VAR:-}`` is optional."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    url: str = ""
    secret: SecretStr = SecretStr("")
    events: list[str] | None = Field(None, description="Event types to send; all when unset.")
    timeout: float = Field(5.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if value and not re.match(r"^https?://[^/\s]+(/\S*)?$", value):
            raise ValueError("expected an http:// or https:// URL (or empty to disable the endpoint)")
        return value

    @model_validator(mode="after")
    def _secret_needed(self) -> EndpointConfig:
        if self.url and len(self.secret.get_secret_value()) < 16:
            raise ValueError(f"endpoint {self.name!r}: secret must be at least 16 characters to sign deliveries")
        return self


class WebhooksConfig(_Strict):
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    max_attempts: int = Field(12, ge=1, le=100)
    backoff_initial: float = Field(1.0, gt=0, description="Seconds before the first retry; doubles each time.")
    backoff_max: float = Field(600.0, gt=0)
    lease_seconds: float = Field(30.0, ge=1, description="A claimed event returns to the queue after this.")
    poll_interval: float = Field(1.0, gt=0, le=60)
    concurrency: int = Field(8, ge=1, le=256)
    retention: float = Field(
        "7d",  # validated like a configured value: seconds once loaded
        validate_default=True,
        description="How long a delivered event is kept after its delivery: 7d, 12h, 30m, 3600s or seconds.",
    )

    @field_validator("retention", mode="before")
    @classmethod
    def _retention_duration(cls, value: object) -> float:
        """``7d``, ``12h``, ``30m``, ``3600s`` or a number of seconds (also a string, as from ``${VAR}``)."""
        seconds: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (match := re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", value.strip())):
            seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        if seconds is None:
            raise ValueError("expected a duration such as 7d, 12h, 30m or 3600s, or a number of seconds")
        if not 0 < seconds <= 3650 * 86400:
            raise ValueError("expected a duration above 0 and at most 3650d, such as 7d, 12h, 30m or 3600s")
        return seconds

    @field_validator("endpoints")
    @classmethod
    def _unique_names(cls, endpoints: list[EndpointConfig]) -> list[EndpointConfig]:
        names = [e.name for e in endpoints]
        if len(names) != len(set(names)):
            raise ValueError("endpoint names must be unique")
        return endpoints

    @property
    def active(self) -> list[EndpointConfig]:
        return [e for e in self.endpoints if e.url]


class SandboxConfig(_Strict):
    public: bool = Field(
        False, description="Serve sandbox apps on a non-loopback address (it has no authentication: demos only)."
    )
    max_users: int = Field(10_000, ge=1, le=10_000_000, description="Simulated users kept; the oldest go first.")


class _FileModel(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    webhooks: WebhooksConfig = Field(default_factory=WebhooksConfig)
    pipelines: dict[FlowName, list[RawStep]] = Field(default_factory=dict)
    apps: dict[str, AppConfig] = Field(min_length=1)

    @field_validator("apps")
    @classmethod
    def _app_names(cls, apps: dict[str, AppConfig]) -> dict[str, AppConfig]:
        for name in apps:
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                raise ValueError(f"app name {name!r} must be 1-64 letters, digits, '_' or '-'")
        return apps


class _SectionsModel(_FileModel):
    """Part of a file (``sections`` of :func:`parse_config`): the apps may be left out."""

    apps: dict[str, AppConfig] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResolvedStep:
    name: str
    cls: type[Step[Any]]
    options: StepOptions
    where: str


@dataclass(frozen=True)
class Config:
    path: str
    digest: str
    server: ServerConfig
    storage_cls: type[Storage]
    storage_options: StorageOptions
    webhooks: WebhooksConfig
    apps: Mapping[str, AppConfig]
    flows: Mapping[str, Mapping[str, tuple[ResolvedStep, ...]]]
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    # where server.host is set ("gw.yaml:3: server.host"), for errors about the address
    host_where: str = ""

    @property
    def uses_sandbox(self) -> bool:
        return any(app.uses_sandbox for app in self.apps.values())

    @property
    def mixes_sandbox_and_real(self) -> bool:
        return self.uses_sandbox and not all(app.uses_sandbox for app in self.apps.values())

    def sandbox_bind_refusal(self, host: str | None = None) -> str | None:
        """Why these apps may not be served on ``host`` (default: ``server.host``), or None.
        The sandbox has no authentication: on an address others can reach, anyone could
        mint its users' sessions. Checked once the bind address is known (``--host``
        included), and by ``wxgate validate`` for the file's own address."""
        from_file = host is None
        host = self.server.host if host is None else host
        if not self.uses_sandbox or self.sandbox.public or is_loopback(host):
            return None
        names = ", ".join(name for name, app in self.apps.items() if app.uses_sandbox)
        where = self.host_where if from_file and self.host_where else self.path
        return (
            f"{where}: app(s) {names} use upstream: sandbox, which has no authentication, and {host!r} is not "
            "a loopback address; bind to 127.0.0.1 (server.host or --host), or set `sandbox: {public: true}` "
            "for a demo that others must reach"
        )


def is_loopback(host: str) -> bool:
    """True for a bind address only this machine reaches ('' and 0.0.0.0 are every address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


# --- YAML with lines ------------------------------------------------------------------


class UnsetVariable(ConfigError):
    """A ``${VAR}`` without a default whose variable is not set."""


class _Document:
    """The YAML as plain Python values, plus the line of every key and item. With ``sections``,
    only variables inside those top-level sections must be set (the rest is not read)."""

    def __init__(
        self,
        text: str,
        file: str,
        env: Mapping[str, str],
        sections: Collection[str] | None = None,
        unread: Collection[tuple[str, ...]] = (),
    ) -> None:
        self.file = file
        self.env = env
        self.sections = sections
        self.unread = unread
        self.marks: dict[Path_, tuple[int, int]] = {}
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            self.value: Any = {} if node is None else self._walk(loader, node, ())
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else file
            lines = text.splitlines()
            hint = _flow_variable_hint(lines[mark.line] if mark and mark.line < len(lines) else "")
            raise ConfigError(f"{where}: not valid YAML: {exc.problem or exc}{hint}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        finally:
            loader.dispose()

    def _walk(self, loader: yaml.SafeLoader, node: yaml.Node, path: Path_) -> Any:
        self.marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
        if isinstance(node, yaml.MappingNode):
            loader.flatten_mapping(node)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int):
                    raise self.error(path, f"keys must be strings, got {type(key).__name__}")
                key_path = (*path, key)
                if key in result:
                    self.marks[key_path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                    raise self.error(key_path, "duplicate key")
                self.marks[key_path] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                result[key] = self._walk(loader, value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self._walk(loader, item, (*path, i)) for i, item in enumerate(node.value)]
        value = loader.construct_object(node, deep=True)
        if isinstance(value, str):
            value = self._interpolate(value, path)
        return value

    def _interpolate(self, value: str, path: Path_) -> str:
        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            value = self.env.get(name)
            # As in the shell: ${X:-d} gives d when X is unset or empty.
            if value and default is not None:
                return value
            if default is not None:
                return default
            if value is not None:
                return value
            if self.sections is not None and (not path or path[0] not in self.sections):
                return match.group(0)  # a section the caller does not use: left as written
            if any(_matches(pattern, path) for pattern in self.unread):
                return match.group(0)  # a key the caller does not read (an app's secret): the same
            raise UnsetVariable(
                f"{self.line_of(path)}: {_dotted(path) or '(top level)'}: environment variable {name} is not set "
                f"(write ${{{name}:-default}} to give a default)"
            )

        return _ENV_REF.sub(substitute, value)

    def line_of(self, path: Path_) -> str:
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark is not None:
                return f"{self.file}:{mark[0]}"
        return self.file

    def error(self, path: Path_, message: str) -> ConfigError:
        return ConfigError(f"{self.line_of(path)}: {_dotted(path) or '(top level)'}: {message}")


_FLOW_VARIABLE = re.compile(r"[{\[][^}\]]*?(?:([A-Za-z_][\w-]*):\s*)?(\$\{[^}]*\})")


def _flow_variable_hint(line: str) -> str:
    """Why ``{token: ${VAR}}`` fails: a plain scalar ends at the ``{`` of ``${``, a flow
    indicator inside ``{...}`` and ``[...]``; quoted, the same value reads as intended."""
    match = _FLOW_VARIABLE.search(line)
    if match is None:
        return ""
    key = f"{match.group(1)}: " if match.group(1) else ""
    return f'; quote a ${{VAR}} inside {{…}} or […]: {key}"{match.group(2)}"'


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_SECRET_WORDS = ("secret", "key", "password", "token")


def _describe(err: Mapping[str, Any], model: type[BaseModel] | None, loc: Path_) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        allowed = sorted(model.model_fields) if model is not None else []
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"unknown key {loc[-1]!r}{hint}"
    if kind == "missing":
        return "required key is missing"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    secret = any(word in str(part).lower() for part in loc for word in _SECRET_WORDS)
    if "input" in err and not secret and kind not in ("model_type", "dict_type", "list_type"):
        got = err["input"]
        if not isinstance(got, dict | list):
            return f"{msg} (got {got!r})"
    return msg


def _model_at(root: type[BaseModel], loc: Path_) -> type[BaseModel] | None:
    """The model that owns the last key of ``loc``, to list the keys it allows."""
    if root is _FileModel and len(loc) > 1:
        if loc[0] == "apps":
            return AppConfig if len(loc) == 3 else None
        if loc[:2] == ("webhooks", "endpoints"):
            return EndpointConfig if len(loc) == 4 else None
        sections: dict[str, type[BaseModel]] = {
            "server": ServerConfig,
            "storage": StorageConfig,
            "webhooks": WebhooksConfig,
        }
        section = sections.get(str(loc[0]))
        return section if len(loc) == 2 else None
    return root if len(loc) == 1 else None


def _validation_error(doc: _Document, exc: ValidationError, base: Path_, model: type[BaseModel]) -> ConfigError:
    lines = []
    for err in exc.errors():
        # pydantic adds the union member ('str', 'dict[...]') to the loc; drop those
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p == "str")))
        full = (*base, *loc)
        owner = _model_at(model, loc) if loc else model
        lines.append(f"{doc.line_of(full)}: {_dotted(full) or '(top level)'}: {_describe(err, owner, loc)}")
    return ConfigError("\n".join(lines))


# --- loading --------------------------------------------------------------------------


def _matches(pattern: tuple[str, ...], path: Path_) -> bool:
    """Whether ``path`` is at or under ``pattern`` (``*`` matches any one key)."""
    return len(path) >= len(pattern) and all(p in ("*", str(k)) for p, k in zip(pattern, path, strict=False))


def load_config(
    path: str | os.PathLike[str] = DEFAULT_CONFIG,
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
    sections: Collection[str] | None = None,
    unread: Collection[tuple[str, ...]] = (),
) -> Config:
    file = str(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the configuration: {exc.strerror}") from None
    return parse_config(text, file, registry, env, sections, unread)


def parse_config(
    text: str,
    file: str = "<config>",
    registry: Registry | None = None,
    env: Mapping[str, str] | None = None,
    sections: Collection[str] | None = None,
    unread: Collection[tuple[str, ...]] = (),
) -> Config:
    """``sections`` (e.g. ``("server", "storage")``): read and check only these top-level keys,
    for a command that uses no more; the apps' secrets then need not be in its environment.
    ``unread`` (e.g. ``("apps", "*", "secret")``): keys under a read section whose variables
    the command does not need; they are left as written."""
    registry = registry if registry is not None else Registry.discover()
    doc = _Document(text, file, os.environ if env is None else env, sections, unread)
    if not isinstance(doc.value, dict):
        raise doc.error((), "the configuration must be a mapping with 'apps:' (and usually 'pipelines:')")
    try:
        if sections is None:
            model = _FileModel.model_validate(doc.value)
        else:
            model = _SectionsModel.model_validate({k: v for k, v in doc.value.items() if k in sections})
    except ValidationError as exc:
        raise _validation_error(doc, exc, (), _FileModel) from None

    storage_cls = registry.storages.get(model.storage.plugin)
    if storage_cls is None:
        known = ", ".join(sorted(registry.storages)) or "none installed"
        raise doc.error(("storage", "plugin"), f"unknown storage {model.storage.plugin!r}; known: {known}")
    try:
        storage_options = storage_cls.Options.model_validate(model.storage.options)
    except ValidationError as exc:
        raise _validation_error(doc, exc, ("storage", "options"), storage_cls.Options) from None

    apps: dict[str, AppConfig] = {}
    flows: dict[str, dict[str, tuple[ResolvedStep, ...]]] = {}
    shared: dict[str, tuple[ResolvedStep, ...]] = {
        flow: _resolve_flow(doc, registry, ("pipelines", flow), steps) for flow, steps in model.pipelines.items()
    }
    defaults = {flow: _resolve_default(registry, flow, steps) for flow, steps in DEFAULT_PIPELINES.items()}
    defaults = {flow: steps for flow, steps in defaults.items() if steps}
    for name, app in model.apps.items():
        apps[name] = app.model_copy(update={"name": name})
        app_flows: dict[str, tuple[ResolvedStep, ...]] = dict(shared)
        for flow, steps in app.pipelines.items():
            app_flows[flow] = _resolve_flow(doc, registry, ("apps", name, "pipelines", flow), steps)
        for built_in, default in defaults.items():
            app_flows.setdefault(built_in, default)
        flows[name] = app_flows

    check_pipelines(flows, shared, defaults)  # each step after the ones it needs
    _check_shared_appids(doc, model.apps)
    return Config(
        path=file,
        digest=hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
        server=model.server,
        storage_cls=storage_cls,
        storage_options=storage_options,
        webhooks=model.webhooks,
        apps=apps,
        flows=flows,
        sandbox=model.sandbox,
        host_where=f"{doc.line_of(('server', 'host'))}: server.host",
    )


def _check_shared_appids(doc: _Document, apps: Mapping[str, AppConfig]) -> None:
    """Two apps may share an appid only as two names for one WeChat app: same upstream,
    same secret. Otherwise a session minted through one (the unauthenticated sandbox,
    say) would be accepted by the other, since sessions are keyed by appid."""
    seen: dict[str, tuple[str, AppConfig]] = {}
    for name, app in apps.items():
        first = seen.setdefault(app.appid, (name, app))
        if first[0] == name:
            continue
        other = first[1]
        same = other.upstream == app.upstream and other.secret.get_secret_value() == app.secret.get_secret_value()
        if not same:
            raise doc.error(
                ("apps", name, "appid"),
                f"app {name!r} has the appid of app {first[0]!r} with another upstream or secret; "
                "sessions are keyed by appid, so one could log users into the other: give each app its own "
                "appid (a sandbox app can use any made-up one)",
            )


def _resolve_default(registry: Registry, flow: str, steps: list[RawStep]) -> tuple[ResolvedStep, ...]:
    resolved = []
    for raw in steps:
        assert isinstance(raw, str)  # the defaults are bare step names
        cls = registry.steps.get(raw)
        if cls is None:  # a registry built by hand (tests) may lack a built-in: no default then
            return ()
        resolved.append(ResolvedStep(name=raw, cls=cls, options=cls.Options(), where=f"built-in {flow} pipeline"))
    return tuple(resolved)


def _resolve_flow(doc: _Document, registry: Registry, path: Path_, steps: list[RawStep]) -> tuple[ResolvedStep, ...]:
    resolved = []
    for i, raw in enumerate(steps):
        item_path = (*path, i)
        if isinstance(raw, str):
            name, options = raw, {}
        elif len(raw) == 1:
            name, value = next(iter(raw.items()))
            options = value or {}
        else:
            raise doc.error(item_path, "a step is a name or a mapping of one name to its options")
        cls = registry.steps.get(name)
        if cls is None:
            raise doc.error(item_path if isinstance(raw, str) else (*item_path, name), registry.unknown_step(name))
        try:
            validated = cls.Options.model_validate(options)
        except ValidationError as exc:
            raise _validation_error(doc, exc, (*item_path, name), cls.Options) from None
        resolved.append(ResolvedStep(name=name, cls=cls, options=validated, where=doc.line_of(item_path)))
    return tuple(resolved)
