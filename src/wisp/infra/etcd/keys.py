"""The whole etcd keyspace, one builder per key family (OpenWhisk's EtcdKV, module 12).

Every component builds keys through this module so that controllers, schedulers and
invokers agree on them. Every key starts with the cluster name (default `whisk`).
Prefix builders end with `/` so that namespace `ns1` never matches `ns10`.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CLUSTER = "whisk"


@dataclass(frozen=True, slots=True)
class EtcdKeys:
    """Key builders bound to one cluster name."""

    cluster: str = DEFAULT_CLUSTER

    # --- liveness ----------------------------------------------------------------

    def instance_lease(self, instance: str) -> str:
        """`{C}/instance/{instance}/lease`, e.g. instance `scheduler0`."""
        return f"{self.cluster}/instance/{instance}/lease"

    # --- schedulers ----------------------------------------------------------------

    def scheduler_prefix(self) -> str:
        return f"{self.cluster}/scheduler/"

    def scheduler(self, sid: str) -> str:
        return f"{self.cluster}/scheduler/{sid}"

    # --- queues ----------------------------------------------------------------------

    def queue_prefix(self) -> str:
        return f"{self.cluster}/queue/"

    def queue_leader(self, invocation_ns: str, fqn: str) -> str:
        """`{C}/queue/{ns}/{fqn}/leader`; fqn is unversioned (`owner/pkg/name`)."""
        return f"{self.cluster}/queue/{invocation_ns}/{fqn}/leader"

    def queue_follower(self, invocation_ns: str, fqn: str, sid: str) -> str:
        return f"{self.cluster}/queue/{invocation_ns}/{fqn}/follower/{sid}"

    # --- throttling ------------------------------------------------------------------

    def throttling_prefix(self) -> str:
        return f"{self.cluster}/throttling/"

    def namespace_throttling(self, invocation_ns: str) -> str:
        return f"{self.cluster}/throttling/{invocation_ns}"

    def action_throttling(self, invocation_ns: str, fqn: str) -> str:
        return f"{self.cluster}/throttling/{invocation_ns}/{fqn}"

    # --- containers ------------------------------------------------------------------

    def in_progress_container(
        self, invocation_ns: str, fqn: str, rev: str, sid: str, creation_id: str
    ) -> str:
        return (
            f"{self.cluster}/in-progress/{invocation_ns}/{fqn}/{rev}"
            f"/scheduler/{sid}/creationId/{creation_id}"
        )

    def existing_container(
        self, invocation_ns: str, fqn: str, rev: str, invoker_id: int, container_id: str
    ) -> str:
        return (
            f"{self.cluster}/namespace/{invocation_ns}/{fqn}/{rev}"
            f"/invoker{invoker_id}/container/{container_id}"
        )

    def warmed_container(
        self, invocation_ns: str, fqn: str, rev: str, invoker_id: int, container_id: str
    ) -> str:
        return (
            f"{self.cluster}/warmed/{invocation_ns}/{fqn}/{rev}"
            f"/invoker/{invoker_id}/container/{container_id}"
        )

    def in_progress_prefix(
        self, invocation_ns: str, fqn: str, rev: str | None = None
    ) -> str:
        return _container_prefix(f"{self.cluster}/in-progress", invocation_ns, fqn, rev)

    def existing_prefix(
        self, invocation_ns: str, fqn: str, rev: str | None = None
    ) -> str:
        return _container_prefix(f"{self.cluster}/namespace", invocation_ns, fqn, rev)

    def warmed_prefix(
        self,
        invocation_ns: str | None = None,
        fqn: str | None = None,
        rev: str | None = None,
    ) -> str:
        if invocation_ns is None or fqn is None:
            return f"{self.cluster}/warmed/"
        return _container_prefix(f"{self.cluster}/warmed", invocation_ns, fqn, rev)

    def in_progress_prefix_by_namespace(self, invocation_ns: str) -> str:
        return f"{self.cluster}/in-progress/{invocation_ns}/"

    def existing_prefix_by_namespace(self, invocation_ns: str) -> str:
        return f"{self.cluster}/namespace/{invocation_ns}/"

    # --- invokers --------------------------------------------------------------------

    def invokers_prefix(self) -> str:
        # DIVERGENCE(openwhisk): the original scans `{C}/invokers` without the trailing
        # slash, so a sibling such as `{C}/invokers2` leaks in; we keep the slash.
        return f"{self.cluster}/invokers/"

    def invoker(
        self,
        invoker_id: int,
        unique_name: str | None = None,
        display_name: str | None = None,
    ) -> str:
        key = f"{self.cluster}/invokers/{invoker_id}"
        if unique_name:
            key += f"/{unique_name}"
            if display_name:
                key += f"/{display_name}"
        return key


def _container_prefix(kind: str, invocation_ns: str, fqn: str, rev: str | None) -> str:
    prefix = f"{kind}/{invocation_ns}/{fqn}/"
    if rev:
        prefix += f"{rev}/"
    return prefix


def last_segment(key: str) -> str:
    """The creation id of an in-progress key, the container id of an existing key."""
    return key.rsplit("/", 1)[-1]


def invoker_id_from_invoker_key(key: str) -> int:
    """`{C}/invokers/{iid}[/...]` → iid; -1 when the segment is not a number."""
    parts = key.split("/")
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        return -1


def invoker_id_from_warmed_key(key: str) -> int:
    """`.../invoker/{iid}/container/{ctr}` → iid (third segment from the end)."""
    try:
        return int(key.split("/")[-3])
    except (IndexError, ValueError):
        return -1


def revision_from_container_key(key: str, prefix: str) -> str:
    """The revision segment right after an unversioned-action prefix."""
    return key[len(prefix) :].split("/", 1)[0]
