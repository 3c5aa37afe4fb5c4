"""The lives of bare-metal nodes (power, deploy, clean, inspect, verify, maintenance, port and
portgroup CRUD, enroll, retire), rendered as the notifications Ironic sends for them."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from . import payloads
from .core import FleetCore
from .model import (
    API_S,
    CLEAN_S,
    DEPLOY_S,
    END,
    ERROR,
    INSPECT_S,
    IRONIC_API,
    LAST_ERRORS,
    MAINTENANCE_S,
    P_CLEAN_FAIL,
    P_DEPLOY_FAIL,
    P_INSPECT_FAIL,
    P_POWER_FAIL,
    POWER_S,
    SINGLE,
    START,
    STEP,
    VERIFY_S,
    Gen,
    Node,
    Operation,
    Port,
)


class IronicLives(FleetCore):
    """What a bare-metal node does in its life, as Ironic notifies it."""

    # --- node actions --------------------------------------------------------------------------

    def _provision(self, node: Node, op: Operation | None, new_state: str, target: str | None, fsm_event: str,
                   role: str, context: dict[str, Any]) -> Operation | None:
        """Move the provision state and emit what `_notify_provision_state_change` emits for it."""
        previous, previous_target = node.provision_state, node.target_provision_state
        node.provision_state, node.target_provision_state = new_state, target
        node.provision_updated_at = node.updated_at = self.now
        if role == START:
            op = self._open("baremetal.node.provision_set", node.uuid, node.uuid)
        priority = "ERROR" if role == ERROR else "INFO"
        suffix = {START: "start", STEP: "success", END: "end", ERROR: "error", SINGLE: "success"}[role]
        payload = payloads.node_payload(
            "NodeSetProvisionStatePayload", node, event=fsm_event,
            previous_provision_state=previous, previous_target_provision_state=previous_target)
        self._emit(f"baremetal.node.provision_set.{suffix}", priority, node.conductor, payload, "ironic",
                   context, op, role)
        return op

    def _power(self, node: Node, to_power: str, context: dict[str, Any] | None = None) -> Gen:
        """`node_power_action`: start, the BMC works 5-30 s, end (or error at ERROR)."""
        context = context or self._conductor_context()
        op = self._open("baremetal.node.power_set", node.uuid, node.uuid)
        node.target_power_state = "power on" if to_power == "rebooting" else to_power
        self._emit("baremetal.node.power_set.start", "INFO", node.conductor,
                   payloads.node_payload("NodeSetPowerStatePayload", node, to_power=to_power),
                   "ironic", context, op, START)
        yield self.rng.uniform(*POWER_S)
        node.updated_at = self.now
        if self.rng.random() < P_POWER_FAIL:
            node.last_error = LAST_ERRORS["power"]
            node.target_power_state = None
            self._emit("baremetal.node.power_set.error", "ERROR", node.conductor,
                       payloads.node_payload("NodeSetPowerStatePayload", node, to_power=to_power),
                       "ironic", context, op, ERROR)
            return
        node.power_state, node.target_power_state, node.last_error = node.target_power_state, None, None
        self._emit("baremetal.node.power_set.end", "INFO", node.conductor,
                   payloads.node_payload("NodeSetPowerStatePayload", node, to_power=to_power),
                   "ironic", context, op, END)

    def _waits(self, total: float, parts: int) -> list[float]:
        cuts = sorted(self.rng.uniform(0, total) for _ in range(parts - 1))
        return [b - a for a, b in zip([0.0, *cuts], [*cuts, total])]

    def _deploy(self, node: Node, rebuild: bool = False) -> Gen:
        ctx = self._conductor_context()
        if not rebuild:
            node.instance_uuid = self._uuid()
            node.owner = self.rng.choice(self.projects)
        image = self.rng.choice(self.images) if self.images else None
        node.image_id = image.id if image else None
        op = self._provision(node, None, "deploying", "active", "rebuild" if rebuild else "deploy", START, ctx)
        w = self._waits(self.rng.uniform(*DEPLOY_S), 3)
        yield w[0]
        yield from self._power(node, "rebooting", ctx)
        self._provision(node, op, "wait call-back", "active", "wait", STEP, ctx)
        yield w[1]
        if image is not None and image.status == "active":  # the agent pulls the image from Glance
            self._download(image, node.owner or image.owner)
        if self.rng.random() < P_DEPLOY_FAIL:
            node.last_error = LAST_ERRORS["deploy"].format(uuid=node.uuid)
            self._provision(node, op, "deploy failed", "active", "fail", ERROR, ctx)
            return
        self._provision(node, op, "deploying", "active", "resume", STEP, ctx)
        yield w[2]
        node.last_error = None
        self._provision(node, op, "active", None, "done", END, ctx)

    def _clean(self, node: Node, start_event: str, from_active: bool) -> Gen:
        """provide (manageable -> available) or undeploy (active / deploy failed -> available)."""
        ctx = self._conductor_context()
        w = self._waits(self.rng.uniform(*CLEAN_S), 3)
        if from_active:
            op = self._provision(node, None, "deleting", "available", start_event, START, ctx)
            yield w[0] / 4
            node.instance_uuid, node.owner, node.image_id = None, None, None
            self._provision(node, op, "cleaning", "available", "clean", STEP, ctx)
            yield w[0] * 3 / 4
        else:
            op = self._provision(node, None, "cleaning", "available", start_event, START, ctx)
            yield w[0]
        self._provision(node, op, "clean wait", "available", "wait", STEP, ctx)
        yield w[1]
        if self.rng.random() < P_CLEAN_FAIL:
            node.last_error = LAST_ERRORS["clean"].format(uuid=node.uuid)
            node.maintenance, node.maintenance_reason = True, node.last_error
            self._provision(node, op, "clean failed", "available", "fail", ERROR, ctx)
            return
        self._provision(node, op, "cleaning", "available", "resume", STEP, ctx)
        yield w[2]
        yield from self._power(node, "power off", ctx)
        node.last_error = None
        self._provision(node, op, "available", None, "done", END, ctx)

    def _inspect(self, node: Node) -> Gen:
        ctx = self._conductor_context()
        node.inspection_started_at, node.inspection_finished_at = self.now, None
        op = self._provision(node, None, "inspecting", "manageable", "inspect", START, ctx)
        w = self._waits(self.rng.uniform(*INSPECT_S), 3)
        yield w[0]
        yield from self._power(node, "rebooting", ctx)
        self._provision(node, op, "inspect wait", "manageable", "wait", STEP, ctx)
        yield w[1]
        if self.rng.random() < P_INSPECT_FAIL:
            node.last_error = LAST_ERRORS["inspect"]
            self._provision(node, op, "inspect failed", "manageable", "fail", ERROR, ctx)
            return
        self._provision(node, op, "inspecting", "manageable", "resume", STEP, ctx)
        yield w[2]
        node.inspection_finished_at, node.last_error = self.now, None
        self._provision(node, op, "manageable", None, "done", END, ctx)

    def _verify(self, node: Node) -> Gen:
        """manage from enroll: verifying (a power state check), then manageable."""
        ctx = self._conductor_context()
        op = self._provision(node, None, "verifying", "manageable", "manage", START, ctx)
        yield self.rng.uniform(*VERIFY_S)
        node.power_state = "power off"
        self._provision(node, op, "manageable", None, "done", END, ctx)

    def _maintenance(self, node: Node) -> Gen:
        """On, a NIC replaced now and then (port delete + create), then off."""
        yield from self._maintenance_set(node, True)
        yield self.rng.uniform(*MAINTENANCE_S) / 2
        if node.ports and self.rng.random() < 0.3:
            yield from self._replace_port(node)
        yield self.rng.uniform(*MAINTENANCE_S) / 2
        wait = self._guard(node.uuid)  # the same operation again: do not supersede a lost end
        if wait:
            yield wait
        yield from self._maintenance_set(node, False)

    def _maintenance_set(self, node: Node, on: bool) -> Gen:
        """The API's maintenance PUT / DELETE: start with the node as it was, end as it is now."""
        ctx = self._api_context()
        op = self._open("baremetal.node.maintenance_set", node.uuid, node.uuid)
        self._emit("baremetal.node.maintenance_set.start", "INFO", IRONIC_API,
                   payloads.node_payload("NodePayload", node), "ironic", ctx, op, START)
        yield self.rng.uniform(*API_S)
        node.maintenance, node.updated_at = on, self.now
        node.maintenance_reason = self.rng.choice(("replacing DIMM B2", "BMC firmware update",
                                                   "NIC flapping")) if on else None
        self._emit("baremetal.node.maintenance_set.end", "INFO", IRONIC_API,
                   payloads.node_payload("NodePayload", node), "ironic", ctx, op, END)

    def _replace_port(self, node: Node) -> Gen:
        old = node.ports[0]
        yield from self._api_call(old.uuid, node.uuid, "port", "delete", lambda: payloads.port_payload(old),
                                  lambda: node.ports.remove(old))
        yield self.rng.uniform(60, 600)
        new = Port(self._uuid(), node.uuid, self._mac(), old.portgroup_uuid, old.local_link_connection, self.now)
        yield from self._api_call(new.uuid, node.uuid, "port", "create", lambda: payloads.port_payload(new),
                                  lambda: node.ports.append(new))
        if self.rng.random() < 0.5:
            yield self.rng.uniform(5, 60)
            def toggle() -> None:
                new.pxe_enabled = not new.pxe_enabled
                new.updated_at = self.now
            yield from self._api_call(new.uuid, node.uuid, "port", "update", lambda: payloads.port_payload(new), toggle)

    def _enroll(self, node: Node) -> Gen:
        """node create, its portgroup and ports, then manage (verifying)."""
        node.created_at = node.updated_at = node.provision_updated_at = self.now
        yield from self._api_call(node.uuid, node.uuid, "node", "create",
                                  lambda: payloads.node_payload("NodeCRUDPayload", node))
        self._attach_ports(node, self.now)
        ports, portgroups = list(node.ports), list(node.portgroups)
        for pg in portgroups:
            yield self.rng.uniform(1, 5)
            pg.created_at = self.now
            yield from self._api_call(pg.uuid, node.uuid, "portgroup", "create", partial(payloads.portgroup_payload, pg))
        for port in ports:
            yield self.rng.uniform(1, 5)
            port.created_at = self.now
            yield from self._api_call(port.uuid, node.uuid, "port", "create", partial(payloads.port_payload, port))
        yield self.rng.uniform(5, 60)
        yield from self._verify(node)

    def _retire(self, node: Node, index: int) -> Gen:
        """An available node leaves the fleet (manage, delete ports, portgroups, node); a new one enrolls."""
        self._provision(node, None, "manageable", None, "manage", SINGLE, self._conductor_context())
        yield self.rng.uniform(30, 300)
        for port in list(node.ports):
            yield from self._api_call(port.uuid, node.uuid, "port", "delete", partial(payloads.port_payload, port))
            yield self.rng.uniform(1, 5)
        for pg in list(node.portgroups):
            yield from self._api_call(pg.uuid, node.uuid, "portgroup", "delete", partial(payloads.portgroup_payload, pg))
            yield self.rng.uniform(1, 5)
        yield from self._api_call(node.uuid, node.uuid, "node", "delete",
                                  lambda: payloads.node_payload("NodeCRUDPayload", node))
        yield self.rng.uniform(600, 3600)
        fresh = self._new_node(index, "new")
        fresh.created_at = fresh.updated_at = fresh.provision_updated_at = self.now
        self.nodes[index] = fresh
        self._spawn(self._node_life(fresh, index, True), 0.0)

    def _corrected(self, node: Node) -> Gen:
        """The power sync loop finds the node in another state than recorded."""
        previous = node.power_state
        node.power_state = "power off" if previous == "power on" else "power on"
        node.updated_at = self.now
        self._emit("baremetal.node.power_state_corrected.success", "INFO", node.conductor,
                   payloads.node_payload("NodeCorrectedPowerStatePayload", node, from_power=previous),
                   "ironic", self._conductor_context(), None, SINGLE)
        yield self.rng.uniform(60, 600)
        yield from self._power(node, previous or "power on")

    def _update(self, node: Node) -> Gen:
        def change() -> None:
            node.extra = {**node.extra, "asset_tag": f"AT-{self._ids.randrange(10**7):07d}"}
            node.updated_at = self.now
        yield from self._api_call(node.uuid, node.uuid, "node", "update",
                                  lambda: payloads.node_payload("NodeCRUDPayload", node), change)

    def _next_action(self, node: Node, index: int) -> Gen | None:
        """The node's next action, drawn by its provision state (data: state -> weighted actions)."""
        state = node.provision_state
        if node.maintenance:  # a clean failure left it in maintenance: an operator fixes it
            return self._recover(node)
        choices: dict[str, tuple[tuple[Callable[[], Gen], float], ...]] = {
            "enroll": ((lambda: self._verify(node), 1.0),),
            "manageable": (
                (lambda: self._inspect(node), 0.35 if node.inspection_finished_at else 0.8),
                (lambda: self._clean(node, "provide", False), 0.6),
                (lambda: self._maintenance(node), 0.05),
            ),
            "available": (
                (lambda: self._deploy(node), 0.72),
                (lambda: self._power(node, self.rng.choice(("power on", "power off"))), 0.1),
                (lambda: self._maintenance(node), 0.06),
                (lambda: self._update(node), 0.06),
                (lambda: self._retire(node, index), 0.03),
                (lambda: self._clean(node, "clean", False), 0.03),
            ),
            "active": (
                (lambda: self._power(node, "rebooting"), 0.34),
                (lambda: self._power(node, "power off" if node.power_state == "power on" else "power on"), 0.16),
                (lambda: self._clean(node, "deleted", True), 0.2),
                (lambda: self._deploy(node, rebuild=True), 0.08),
                (lambda: self._maintenance(node), 0.08),
                (lambda: self._update(node), 0.08),
                (lambda: self._corrected(node), 0.06),
            ),
            "deploy failed": ((lambda: self._clean(node, "deleted", True), 1.0),),
        }
        options = choices.get(state)
        if options is None:  # clean failed / inspect failed: manage back
            return self._recover(node)
        actions, weights = zip(*options)
        return self.rng.choices(actions, weights)[0]()

    def _recover(self, node: Node) -> Gen:
        if node.maintenance:
            yield from self._maintenance_set(node, False)
        if node.provision_state in ("clean failed", "inspect failed"):
            self._provision(node, None, "manageable", None, "manage", SINGLE, self._conductor_context())

    def _node_life(self, node: Node, index: int, new: bool) -> Gen:
        if new:
            yield from self._enroll(node)
            # the guard below needs its terminal events to have passed the faults stage first
            yield self.rng.uniform(60, 600)
        while not self.closing and self.nodes[index] is node:
            wait = self._guard(node.uuid)
            if wait:
                yield wait
                continue
            action = self._next_action(node, index)
            if action is not None:
                yield from action
            if self.nodes[index] is not node:  # retired: its successor has its own life
                return
            yield self.rng.expovariate(1.0 / self.think_s)
