"""The configuration tree: frozen dataclasses, one per component, units in the names.

Field names equal the keys of `defaults.toml` and of `WISP__SECTION__KEY` variables
(see `load.py`). OpenWhisk's key names are kept, translated to snake_case with units.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    #: "memory" for the embedded store, else comma-separated host:port of etcd
    hosts: str = "memory"
    cluster_name: str = "whisk"
    lease_ttl_s: int = 10
    keep_alive_interval_s: float = 0.5
    request_timeout_s: float = 5.0
    #: DataManagementService retry interval
    retry_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class MessagingConfig:
    #: "memory" for in-process topics (the only broker adapter so far)
    backend: str = "memory"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    #: "sqlite" (file under data_dir) or "memory"
    backend: str = "sqlite"
    data_dir: str = ".wisp"


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    #: default containers per namespace (OpenWhisk's concurrentInvocations)
    concurrent_invocations: int = 30
    #: invocations per minute per namespace; 0 disables the rate throttle
    invocations_per_minute: int = 0
    max_payload_bytes: int = 1_048_576


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    instance_id: str = "0"
    host: str = "127.0.0.1"
    port: int = 3233
    #: longest a blocking invoke waits before answering 202 (also the default)
    max_blocking_wait_s: float = 60.0
    #: forced completion after max(timeout, 60 s) * factor + addon
    timeout_factor: float = 2.0
    timeout_addon_s: float = 60.0
    create_queue_timeout_s: float = 8.0
    create_queue_retries: int = 5


@dataclass(frozen=True, slots=True)
class QueueConfig:
    idle_grace_s: float = 20.0
    stop_grace_s: float = 20.0
    flush_grace_s: float = 60.0
    graceful_shutdown_timeout_s: float = 5.0
    max_retention_size: int = 10_000
    max_retention_ms: int = 60_000
    max_blackbox_retention_ms: int = 300_000
    throttling_fraction: float = 0.9
    duration_buffer_size: int = 10
    fail_throttle_as_whisk_error: bool = False
    #: how long a FetchActivation long-poll waits for a message
    long_poll_s: float = 1.0


@dataclass(frozen=True, slots=True)
class SchedulingConfig:
    stale_threshold_ms: int = 100
    check_interval_ms: int = 100
    drop_interval_s: float = 10.0
    allow_over_provision_before_throttle: bool = False
    namespace_over_provision_before_throttle_ratio: float = 1.5


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    instance_id: str = "0"
    host: str = "127.0.0.1"
    #: gRPC port for FetchActivation and queue RPCs; 0 picks a free port
    rpc_port: int = 0
    #: admin HTTP port; 0 picks a free port, -1 disables it
    admin_port: int = -1
    admin_username: str = "scheduler.user"
    admin_password: str = "scheduler.pass"
    max_peek: int = 128
    max_scheduling_time_s: float = 20.0
    max_retries_to_get_queue: int = 13
    in_progress_job_retention_s: float = 20.0
    blackbox_multiple: int = 15
    creation_max_retries: int = 5
    creation_retry_base_ms: int = 100
    managed_fraction: float = 0.9
    blackbox_fraction: float = 0.1
    min_memory_mb: int = 128
    state_publish_interval_s: float = 1.0
    queue: QueueConfig = field(default_factory=QueueConfig)
    scheduling: SchedulingConfig = field(default_factory=SchedulingConfig)


@dataclass(frozen=True, slots=True)
class ContainerProxyConfig:
    pause_grace_s: float = 10.0
    idle_container_s: float = 600.0
    keeping_duration_s: float = 600.0
    #: proxy gives up waiting for a reschedule answer after this long
    rescheduling_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    #: "auto" uses bubblewrap when the bwrap binary works, "bwrap" requires it,
    #: "none" runs actions as plain child processes (setrlimit still applies)
    sandbox: str = "auto"
    max_open_files: int = 1024
    max_processes: int = 512
    #: seconds a runtime process has to open its port
    startup_timeout_s: float = 10.0
    python_executable: str = ""
    node_executable: str = "node"


@dataclass(frozen=True, slots=True)
class InvokerConfig:
    instance_id: int = 0
    #: admin HTTP port (FPCInvokerServer); 0 picks a free port, -1 disables it
    admin_port: int = -1
    admin_username: str = "invoker.user"
    admin_password: str = "invoker.pass"
    #: run a probe action while unhealthy to find out when to be healthy again
    health_probe: bool = True
    user_memory_mb: int = 2048
    max_peek: int = 500
    memory_sync_interval_s: float = 1.0
    tags: tuple[str, ...] = ()
    dedicated_namespaces: tuple[str, ...] = ()
    health_buffer_size: int = 10
    health_error_tolerance: int = 3
    proxy: ContainerProxyConfig = field(default_factory=ContainerProxyConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Defaults of the `wisp action` / `wisp activation` commands."""

    apihost: str = "http://127.0.0.1:3233"
    #: uuid:key; OpenWhisk standalone's well-known guest key
    auth: str = (
        "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:"
        "123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
    )


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "INFO"
    #: "text" (key=value) or "json"
    format: str = "text"


@dataclass(frozen=True, slots=True)
class WispConfig:
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    messaging: MessagingConfig = field(default_factory=MessagingConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    invoker: InvokerConfig = field(default_factory=InvokerConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
