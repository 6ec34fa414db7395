"""The call service: who may call, groups from the tick, mesh or SFU, the signaling relay.

Job: :class:`CallService`, one per server, turns the positions the worlds already have into
proximity calls (docs/calls.md). A chat connection says ``call.enable`` (protocol/chat.py,
SPEC 7.9); from then on the player's avatar is given, every ``calls.interval_ticks`` ticks of
its world, to that world's :class:`~worldserver.calls.groups.GroupFormer` (one per hosted
world, so entity ids of two worlds never meet), and the former's changes become ``call.*``
events on the player's chat socket. Group ids on the wire are ``<world id>/<former's id>``.

Who is grouped: a player whose chat socket enabled calls (one call socket per player: the
newest ``call.enable`` takes the call over), whose avatar is in a hosted world (found through
:meth:`worldserver.identity.Identities.avatar`, checked each update against the world's slot
and generation, all avatars of a world at once), not muted and not kicked. A mute, a kick (the
chat's or the admin API's: worldserver/moderation.py calls the chat service, which calls
:meth:`CallService.muted` and :meth:`CallService.kicked`), ``call.enable`` off and a closed chat
socket take the player out at once: ``call.left`` to it (unless its socket is gone),
``call.members`` to the others, its SFU ticket revoked.

Mesh or SFU (per group): without an SFU backend every group is a mesh of at most
``calls.max_members`` members; later arrivals get ``call.full`` and join, in arrival order,
when a place frees. With a backend (:class:`~worldserver.calls.sfu.SfuBackend`), a group that
grows over ``calls.mesh_max``, and every zone group, goes to an SFU room: the service asks the
backend for a room and a ticket per member in its own task (:meth:`CallService.run`: one worker,
a bounded queue of groups to bring up to date, a deadline on every backend call), keeps the
mesh going meanwhile, then sends every member ``call.joined`` with ``mode: "sfu"`` and its
ticket. A group stays on its room until it ends (no flapping back); members who leave have
their ticket revoked, an ended group's room is closed. A backend that fails while a group
moves to the SFU leaves the group on the mesh (``calls.max_members``, counted
``calls.sfu_fallback_mesh``); one that fails to admit a newcomer to a running room gives it
``call.left`` ``ended``. Failures count ``calls.sfu_failed.<op>``.

Signaling (``call.signal``) is relayed only between two members of one mesh group, from the
sender's own name; anything else is ``forbidden`` (``drop.call_signal_forbidden``); each player
has a token bucket (``calls.signal_rate``/``calls.signal_burst``,
``drop.call_signal_rate_limited``).

Cost in the tick (:meth:`CallService.on_tick`, called by the tick loop after each world's
tick): nothing on the ticks between updates; on an update, a few whole-array operations over
the world's calling avatars (slot and generation check, positions), the former, and Python
work only per change and per player whose state changed. The SFU never runs in the tick.

Must not: block or await in the tick path, talk to the media server outside its worker task,
decode frames (protocol/chat.py does), touch sockets (it sends through the chat peers), or
relay anything to a player outside the sender's group.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import numpy as np
import trio

from protocol import chat as P
from worldserver.calls.groups import Change, GroupFormer
from worldserver.calls.sfu import SfuBackend, SfuError, SfuTicket
from worldserver.chat.errors import ChatError
from worldserver.hosting import as_host
from worldserver.limits import TokenBuckets
from worldserver.logs import LogLimiter, get_logger
from worldserver.stats import Stats

__all__ = ["CallService", "MAX_SFU_QUEUE", "SFU_CALL_TIMEOUT"]

log = get_logger("worldserver.calls")

SFU_CALL_TIMEOUT = 10.0  # seconds one backend call may take before it counts as failed (timeout)
MAX_SFU_QUEUE = 1024  # live groups waiting for the SFU worker; beyond: the group stays on the mesh
SHUTDOWN_CLOSE_TIMEOUT = 5.0  # seconds to close the rooms when the server stops
SWEEP_INTERVAL = 30.0  # seconds between two sweeps of full signaling buckets
LOG_INTERVAL = 60.0  # at most one log line per kind of backend failure this often

# A caller's place in its group.
NEW, MEMBER, WAITING, PENDING, REFUSED = "new", "member", "waiting", "pending", "refused"


class _Caller:
    """One player with calls enabled: its call socket and, while it is grouped, its avatar."""

    __slots__ = ("name", "peer", "token", "world", "session", "entity_id", "slot", "generation",
                 "group", "status", "ticket", "muted_until")

    def __init__(self, name: str, peer) -> None:
        self.name = name
        self.peer = peer
        self.token = peer.token
        self.world: _World | None = None  # the world whose former has its avatar
        self.session = None
        self.entity_id = -1
        self.slot = -1
        self.generation = -1
        self.group: _Group | None = None
        self.status: str | None = None
        self.ticket: SfuTicket | None = None
        self.muted_until = 0.0

    def send(self, frame: str) -> bool:
        return self.peer.send(frame)


class _Group:
    """One call group of one world, as the service tracks it (the former knows its members)."""

    __slots__ = ("world", "gid", "wire", "zone", "mode", "callers", "members", "announced", "listed",
                 "room", "issued", "sfu_wanted", "sfu_failed", "ended", "queued")

    def __init__(self, world: _World, gid: str) -> None:
        self.world = world
        self.gid = gid
        self.wire = f"{world.world_id}/{gid}"
        self.zone = gid[5:] if gid.startswith("zone:") else None
        self.mode = "mesh"
        self.callers: dict[int, _Caller] = {}  # entity id -> caller, in arrival order
        self.members: list[_Caller] = []  # admitted (status MEMBER), in admission order
        self.announced: set[_Caller] = set()  # members told call.joined in the current mode
        self.listed: tuple | None = None  # the member list they were last told
        self.room: int | None = None
        self.issued: list[tuple[_Caller, SfuTicket]] = []  # tickets not revoked yet
        self.sfu_wanted = False
        self.sfu_failed = False
        self.ended = False
        self.queued = False


class _World:
    """The calls of one hosted world: its former, its groups, its calling avatars."""

    def __init__(self, sim, config) -> None:
        self.sim = sim
        self.world_id = sim.world_id
        self.zones = tuple(sim.world_spec.zones)
        self.former = GroupFormer(config.radius, config.leave_radius, self.zones)
        self.groups: dict[str, _Group] = {}
        self.by_eid: dict[int, _Caller] = {}
        self.ticks = 0
        self.dirty = True
        self.order: list[_Caller] = []
        self.eids = np.zeros(0, dtype=np.int64)
        self.slots = np.zeros(0, dtype=np.int64)
        self.gens = np.zeros(0, dtype=np.int64)

    def rebuild(self) -> None:
        order = list(self.by_eid.values())
        self.order = order
        self.eids = np.fromiter((c.entity_id for c in order), dtype=np.int64, count=len(order))
        self.slots = np.fromiter((c.slot for c in order), dtype=np.int64, count=len(order))
        self.gens = np.fromiter((c.generation for c in order), dtype=np.int64, count=len(order))
        self.dirty = False


class CallService:
    """Proximity calls of one server (see the module docstring).

    ``chat``: the :class:`~worldserver.chat.service.ChatService` whose peers carry the frames
    (its ``identities`` find avatars, its mutes are honoured; the service sets ``chat.calls``);
    ``worlds``: the :class:`~worldserver.hosting.WorldHost` (or one Simulation); ``backend``: the
    SFU, or None for mesh only. Runs :meth:`run` in the server's nursery (the SFU worker) and is
    called by the tick loop (:meth:`on_tick`).
    """

    def __init__(self, config, chat, worlds, stats: Stats | None = None,
                 backend: SfuBackend | None = None) -> None:
        calls = config.calls
        self.settings = calls
        self.enabled = bool(calls.enabled)
        self.interval = int(calls.interval_ticks)
        self.mesh_max = int(calls.mesh_max)
        self.max_members = int(calls.max_members)
        self.chat = chat
        self.identities = chat.identities
        self.worlds = as_host(worlds) if worlds is not None else None
        self.stats = stats if stats is not None else Stats()
        self.backend = backend
        self.signals = TokenBuckets(calls.signal_rate, calls.signal_burst)  # by player name
        self.callers: dict[str, _Caller] = {}
        self.by_peer: dict[Any, _Caller] = {}
        self._unresolved: set[_Caller] = set()  # enabled, no avatar found yet
        self._muted: set[_Caller] = set()  # enabled, muted: grouped again when the mute ends
        self._worlds: dict[str, _World] = {}
        self._queue: OrderedDict[_Group, None] = OrderedDict()  # groups for the SFU worker
        self._wake = trio.Event()
        self._log = LogLimiter(log, LOG_INTERVAL)
        chat.calls = self

    # ------------------------------------------------------------------ running

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The SFU worker (when there is a backend) and the sweep of idle signaling buckets,
        until cancelled; then every open room is closed (bounded by a deadline)."""
        try:
            async with trio.open_nursery() as nursery:
                if self.backend is not None:
                    nursery.start_soon(self._sfu_worker)
                nursery.start_soon(self._sweep_loop)
                task_status.started(self)
        finally:
            if self.backend is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_CLOSE_TIMEOUT):
                    await self._close_all_rooms()

    async def _sweep_loop(self) -> None:
        while True:
            await trio.sleep(SWEEP_INTERVAL)
            self.signals.sweep(trio.current_time())

    # ------------------------------------------------------------------ requests

    def handle(self, peer, request) -> None:
        """``call.enable`` or ``call.signal`` of an authenticated chat peer; returns when it
        is done (the chat service replies ``{}``), raises ChatError otherwise."""
        if not self.enabled:
            self.stats.incr("drop.call_disabled")
            raise ChatError("forbidden", "calls are turned off on this server")
        if request.OP == "call.enable":
            if request.on:
                self.enable(peer)
            else:
                self.disable(peer)
            return
        self._signal(peer, request)

    def enable(self, peer) -> None:
        """Calls on for ``peer``'s player: grouped from the next update of its world. Another
        socket of the player that had the call loses it (``call.left`` ``disabled``)."""
        if peer in self.by_peer:
            return
        name = peer.user
        old = self.callers.get(name)
        if old is not None:
            self._remove(old, "disabled", notify=True)
        caller = _Caller(name, peer)
        self.callers[name] = caller
        self.by_peer[peer] = caller
        self._unresolved.add(caller)
        self.stats.incr("calls.enabled")

    def disable(self, peer) -> None:
        """Calls off for ``peer`` (``call.left`` ``disabled`` if it was in a group)."""
        caller = self.by_peer.get(peer)
        if caller is not None:
            self._remove(caller, "disabled", notify=True)
            self.stats.incr("calls.disabled")

    def peer_closed(self, peer) -> None:
        """The chat socket ended: out of its call (the others hear it), nothing sent to it."""
        caller = self.by_peer.get(peer)
        if caller is not None:
            self._remove(caller, "disabled", notify=False)
            self.stats.incr("calls.closed")

    def muted(self, user: str, until: float) -> None:
        """``user`` was muted until ``until`` (trio clock): out of its call at once, grouped
        again when the mute has run out."""
        caller = self.callers.get(user)
        if caller is None:
            return
        caller.muted_until = until
        self._take_out(caller, "muted", notify=True)
        self._detach(caller)
        self._unresolved.discard(caller)
        self._muted.add(caller)

    def unmuted(self, user: str) -> None:
        caller = self.callers.get(user)
        if caller is not None and caller in self._muted:
            self._muted.discard(caller)
            caller.muted_until = 0.0
            self._unresolved.add(caller)

    def kicked(self, user: str) -> None:
        """``user`` is being kicked (its chat sockets close next): out of its call at once."""
        caller = self.callers.get(user)
        if caller is not None:
            self._remove(caller, "kicked", notify=True)

    def _signal(self, peer, request: P.CallSignal) -> None:
        caller = self.by_peer.get(peer)
        now = trio.current_time()
        wait = self.signals.take(peer.user, now)
        if wait > 0:
            self.stats.incr("drop.call_signal_rate_limited")
            raise ChatError("rate_limited", "too many call signals", wait)
        group = caller.group if caller is not None else None
        target = None
        if group is not None and caller.status == MEMBER and group.mode == "mesh":
            for member in group.members:
                if member.name == request.to and member is not caller:
                    target = member
                    break
        if target is None:
            self.stats.incr("drop.call_signal_forbidden")
            raise ChatError("forbidden", f"{request.to} is not in a mesh call with you")
        target.send(P.encode_event("call.signal", group=group.wire, data=dict(request.data),
                                   **{"from": caller.name}))
        self.stats.incr("calls.signals")

    # ------------------------------------------------------------------ the tick

    def on_tick(self, sim, now: float) -> None:
        """After ``sim``'s tick: every ``calls.interval_ticks`` of its ticks, update its groups."""
        if not self.enabled or not self.callers and not self._worlds:
            return
        world = self._worlds.get(sim.world_id)
        if world is None or world.sim is not sim:
            if world is not None:
                self._close_world(world)
            world = self._world_for(sim)
            if world is None:
                return
        world.ticks += 1
        if world.ticks % self.interval:
            return
        try:
            self.update(world, now)
        except Exception:  # a bug here must not stop the tick loop: logged, counted, next update
            self.stats.incr("calls.internal_errors")
            self._log.log(logging.ERROR, "update", "call update failed", world=world.world_id, exc_info=True)

    def update(self, world: _World, now: float) -> None:
        """One update of ``world``'s groups (see the module docstring)."""
        if self._muted:
            for caller in [c for c in self._muted if c.muted_until <= now]:
                self._muted.discard(caller)
                self._unresolved.add(caller)
        if self._unresolved:
            self._resolve()
        if len(self._worlds) > 1 and self.worlds is not None:
            for other in [w for w in self._worlds.values() if self.worlds.sims.get(w.world_id) is not w.sim]:
                self._close_world(other)
        if world.sim.world_spec.zones != world.zones:
            self._rezone(world)
        if world.dirty:
            world.rebuild()
        ids = world.eids
        xy = np.zeros((0, 2), dtype=np.float32)
        if len(ids):
            state = world.sim.world
            slots = world.slots
            alive = state.alive[slots] & (state.generation[slots] == world.gens)
            if not alive.all():
                for i in np.flatnonzero(~alive).tolist():  # (their groups are in this update's changes)
                    caller = world.order[i]
                    self._take_out(caller, "moved_away", notify=True, republish=False)
                    self._detach(caller)
                    self._unresolved.add(caller)
                world.rebuild()
                ids, slots = world.eids, world.slots
            xy = state.pos[slots][:, (0, 2)].astype(np.float32)
        changes = world.former.update(ids, xy)
        if changes:
            self._apply(world, changes)

    def _world_for(self, sim) -> _World | None:
        """The call state of ``sim``, made on first use; None for a world not hosted."""
        world = self._worlds.get(sim.world_id)
        if world is not None and world.sim is sim:
            return world
        if self.worlds is not None and self.worlds.sims.get(sim.world_id) is not sim:
            return None
        world = self._worlds[sim.world_id] = _World(sim, self.settings)
        return world

    def _resolve(self) -> None:
        """Find the avatars of the enabled players that have none yet (or are unmuted)."""
        now = trio.current_time()
        for caller in list(self._unresolved):
            muted = self.chat.muted_for(caller.name)
            if muted > 0:
                caller.muted_until = now + muted
                self._unresolved.discard(caller)
                self._muted.add(caller)
                continue
            session = self.identities.avatar(caller.token)
            sim = getattr(session, "sim", None)
            if sim is None:
                continue
            world = self._world_for(sim)
            if world is None:
                continue
            eid = int(session.entity_id)
            if world.sim.world.slot_of(eid) is None or eid in world.by_eid:  # left the world
                continue
            self._unresolved.discard(caller)
            caller.world, caller.session = world, session
            slot = int(session.slot)
            caller.entity_id, caller.slot, caller.generation = eid, slot, int(world.sim.world.generation[slot])
            world.by_eid[eid] = caller
            world.dirty = True

    def _detach(self, caller: _Caller) -> None:
        """Take the caller's avatar out of its world's former (it may be found again)."""
        world = caller.world
        if world is None:
            return
        if world.by_eid.get(caller.entity_id) is caller:
            del world.by_eid[caller.entity_id]
            world.former.remove(caller.entity_id)
            world.dirty = True
        caller.world = caller.session = None

    def _remove(self, caller: _Caller, reason: str, *, notify: bool) -> None:
        """Calls off for good for this caller (disabled, socket closed, kicked)."""
        self._take_out(caller, reason, notify=notify)
        self._detach(caller)
        self._unresolved.discard(caller)
        self._muted.discard(caller)
        if self.callers.get(caller.name) is caller:
            del self.callers[caller.name]
        self.by_peer.pop(caller.peer, None)

    def _close_world(self, world: _World) -> None:
        """A world no longer hosted (closed by the operator): its calls end."""
        for caller in list(world.by_eid.values()):
            self._take_out(caller, "ended", notify=True, republish=False)
            self._detach(caller)
            self._unresolved.add(caller)
        for group in list(world.groups.values()):
            self._end_group(group)
        if self._worlds.get(world.world_id) is world:
            del self._worlds[world.world_id]

    def _rezone(self, world: _World) -> None:
        """The world's call zones changed (a reload): every group ends, a new former starts."""
        callers = list(world.by_eid.values())
        for caller in callers:
            self._take_out(caller, "ended", notify=True, republish=False)
        for group in list(world.groups.values()):
            self._end_group(group)
        world.zones = tuple(world.sim.world_spec.zones)
        world.former = GroupFormer(self.settings.radius, self.settings.leave_radius, world.zones)
        self.stats.incr("calls.rezoned")

    # ------------------------------------------------------------------ groups

    def _apply(self, world: _World, changes: list[Change]) -> None:
        """The former's changes -> the groups' state and the events (leaves first, so a player
        moving from one group to another leaves the first before it joins the second)."""
        touched: list[_Group] = []
        for change in changes:
            group = world.groups.get(change.group)
            if group is None:
                continue
            touched.append(group)
            for eid in change.left:
                caller = group.callers.get(eid)
                if caller is not None:
                    self._take_out(caller, "moved_away", notify=True, republish=False)
        for change in changes:
            group = world.groups.get(change.group)
            if not change.members:
                if group is not None:
                    self._end_group(group)
                continue
            if group is None:
                group = world.groups[change.group] = _Group(world, change.group)
                self.stats.incr("calls.groups_formed")
                touched.append(group)
            for eid in change.joined:
                caller = world.by_eid.get(eid)
                if caller is None or caller.group is not None:
                    continue
                caller.group, caller.status = group, NEW
                group.callers[eid] = caller
        for group in dict.fromkeys(touched):
            if not group.ended:
                self._admit(group)
                self._publish(group)

    def _admit(self, group: _Group) -> None:
        """Give the group's newcomers their place: the SFU path, or the mesh up to
        ``calls.max_members`` (then ``call.full``, and a place when one frees)."""
        backend_ok = self.backend is not None and not group.sfu_failed
        if group.mode == "sfu" or group.sfu_wanted or (
                backend_ok and (group.zone is not None or len(group.callers) > self.mesh_max)):
            group.sfu_wanted = True
            fresh = False
            for caller in group.callers.values():
                if caller.status in (NEW, WAITING):
                    caller.status = PENDING
                    fresh = True
            if fresh or group.room is None or group.mode == "mesh":
                self._request_sync(group)
            return
        for caller in group.callers.values():
            if caller.status not in (NEW, WAITING, PENDING):
                continue
            if len(group.members) < self.max_members:
                caller.status = MEMBER
                group.members.append(caller)
            elif caller.status != WAITING:
                caller.status = WAITING
                caller.send(P.encode_event("call.full", group=group.wire))
                self.stats.incr("drop.call_full")

    def _publish(self, group: _Group) -> None:
        """``call.joined`` to members not told yet, ``call.members`` to the others when the
        list changed."""
        listed = tuple(sorted((c.name, c.entity_id) for c in group.members))
        if listed == group.listed and all(c in group.announced for c in group.members):
            return
        members = [{"name": name, "entity_id": eid} for name, eid in listed]
        changed = listed != group.listed
        group.listed = listed
        members_frame = joined_frame = None
        for caller in group.members:
            if caller in group.announced:
                if changed:
                    if members_frame is None:
                        members_frame = P.encode_event("call.members", group=group.wire, members=members)
                    caller.send(members_frame)
                continue
            if group.mode == "sfu" and caller.ticket is not None:  # a ticket of its own
                frame = P.encode_event("call.joined", group=group.wire, zone=group.zone, mode=group.mode,
                                       members=members, sfu=caller.ticket.as_event())
            else:  # the same frame for every newcomer of a mesh
                if joined_frame is None:
                    joined_frame = P.encode_event("call.joined", group=group.wire, zone=group.zone,
                                                  mode=group.mode, members=members, sfu=None)
                frame = joined_frame
            caller.send(frame)
            group.announced.add(caller)
            self.stats.incr("calls.joined")

    def _take_out(self, caller: _Caller, reason: str, *, notify: bool, republish: bool = True) -> None:
        """Out of its group now: ``call.left`` (to a member or a waiting player), its ticket to
        revoke, a waiting player let in, ``call.members`` to the rest."""
        group = caller.group
        if group is None:
            return
        status = caller.status
        if group.callers.get(caller.entity_id) is caller:
            del group.callers[caller.entity_id]
        caller.group, caller.status = None, None
        group.announced.discard(caller)
        if notify and status in (MEMBER, WAITING):
            caller.send(P.encode_event("call.left", group=group.wire, reason=reason))
            self.stats.incr(f"calls.left.{reason}")
        if caller.ticket is not None:
            caller.ticket = None
            self._request_sync(group)  # revokes the ticket
        if status == MEMBER:
            group.members.remove(caller)
            if republish and not group.ended:
                self._admit(group)
                self._publish(group)

    def _end_group(self, group: _Group) -> None:
        world = group.world
        for caller in list(group.callers.values()):
            self._take_out(caller, "moved_away", notify=True, republish=False)
        group.ended = True
        if world.groups.get(group.gid) is group:
            del world.groups[group.gid]
        self.stats.incr("calls.groups_ended")
        if group.room is not None or group.issued:
            self._request_sync(group)

    # ------------------------------------------------------------------ the SFU worker

    def _request_sync(self, group: _Group) -> None:
        """Queue the group for the SFU worker (once; it reads the group's state when it runs)."""
        if self.backend is None or group.queued:
            return
        # A group's first request is refused when too many wait; later ones (tickets to revoke,
        # a room to close) are bounded by the rooms the worker opened.
        first = not group.ended and group.mode == "mesh" and group.room is None and not group.issued
        if first and len(self._queue) >= MAX_SFU_QUEUE:
            self.stats.incr("drop.call_sfu_queue_full")
            self._fall_back(group)
            return
        group.queued = True
        self._queue[group] = None
        self._wake.set()

    async def _sfu_worker(self) -> None:
        while True:
            while not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
            group, _ = self._queue.popitem(last=False)
            group.queued = False
            try:
                await self._sync(group)
            except Exception:
                self._log.log(logging.ERROR, "sync", "call sfu sync failed", group=group.wire, exc_info=True)
                self.stats.incr("calls.sfu_failed.internal")

    async def _backend_call(self, op: str, call, *args):
        """``await call(*args)`` under :data:`SFU_CALL_TIMEOUT`; SfuError on any failure."""
        try:
            with trio.fail_after(SFU_CALL_TIMEOUT):
                return await call(*args)
        except trio.TooSlowError:
            failure = SfuError("timeout", f"{op} took longer than {SFU_CALL_TIMEOUT:g} s")
        except SfuError as exc:
            failure = exc
        except Exception as exc:  # a backend bug must not end the worker
            failure = SfuError("error", repr(exc)[:200])
        self.stats.incr(f"calls.sfu_failed.{op}")
        self._log.log(logging.WARNING, f"{op}_{failure.reason}", "call sfu failed", op=op,
                      reason=failure.reason, error=str(failure)[:200])
        raise failure

    async def _sync(self, group: _Group) -> None:
        """Bring the backend up to date with ``group``: its room, a ticket per member, tickets
        of those gone revoked, the switch from the mesh; an ended group's room closed."""
        backend = self.backend
        if group.ended:
            await self._revoke_stale(group)
            await self._close_room(group)
            return
        if not group.sfu_wanted or group.sfu_failed:
            await self._revoke_stale(group)
            return
        if group.room is None:
            try:
                room = await self._backend_call("open", backend.open_room, group.wire)
            except SfuError:
                self._fall_back(group)
                return
            group.room = room
            self.stats.incr("calls.sfu_rooms_opened")
            if group.ended:
                await self._sync(group)
                return
        while not group.ended:
            wanting = [c for c in group.callers.values()
                       if c.ticket is None and c.status in (PENDING, MEMBER)]
            if not wanting:
                break
            caller = wanting[0]
            try:
                ticket = await self._backend_call("admit", backend.admit, group.room, caller.name)
            except SfuError:
                if group.mode == "mesh":  # still moving over: the whole group stays on the mesh
                    await self._abandon_room(group)
                    return
                if caller.group is group and caller.status == PENDING:
                    caller.status = REFUSED
                    caller.send(P.encode_event("call.left", group=group.wire, reason="ended"))
                    self.stats.incr("calls.left.ended")
                continue
            group.issued.append((caller, ticket))
            self.stats.incr("calls.sfu_tickets")
            if caller.group is group and caller.status in (PENDING, MEMBER) and caller.ticket is None:
                caller.ticket = ticket
        await self._revoke_stale(group)
        if group.ended:
            await self._sync(group)
            return
        if group.mode == "mesh":
            group.mode = "sfu"
            group.announced.clear()
            group.listed = None
            self.stats.incr("calls.sfu_groups")
        for caller in group.callers.values():
            if caller.status == PENDING and caller.ticket is not None:
                caller.status = MEMBER
                group.members.append(caller)
        group.members = [c for c in group.members if c.ticket is not None]
        self._publish(group)

    async def _revoke_stale(self, group: _Group) -> None:
        """Revoke the tickets whose holder left the group (or got another ticket)."""
        keep = []
        stale = []
        for caller, ticket in group.issued:
            if not group.ended and caller.group is group and caller.ticket is ticket:
                keep.append((caller, ticket))
            else:
                stale.append(ticket)
        group.issued = keep
        for ticket in stale:
            if group.room is None:
                break
            try:
                await self._backend_call("revoke", self.backend.revoke, group.room, ticket)
                self.stats.incr("calls.sfu_revoked")
            except SfuError:
                pass

    async def _abandon_room(self, group: _Group) -> None:
        """The backend failed while the group moved over: drop its tickets and room, mesh on."""
        for caller in group.callers.values():
            caller.ticket = None
        group.issued = []
        await self._close_room(group)
        self._fall_back(group)

    async def _close_room(self, group: _Group) -> None:
        """Close the group's SFU room, if it has one (a backend failure is counted by
        ``_backend_call``; the room is forgotten either way)."""
        if group.room is None:
            return
        room, group.room = group.room, None
        try:
            await self._backend_call("close", self.backend.close_room, room)
            self.stats.incr("calls.sfu_rooms_closed")
        except SfuError:
            pass

    def _fall_back(self, group: _Group) -> None:
        """The group stays on (or goes back to) the mesh: pending members take mesh places."""
        if group.ended or group.mode == "sfu":
            return
        group.sfu_failed = True
        group.sfu_wanted = False
        self.stats.incr("calls.sfu_fallback_mesh")
        self._admit(group)
        self._publish(group)

    async def _close_all_rooms(self) -> None:
        rooms = [g for w in self._worlds.values() for g in w.groups.values() if g.room is not None]
        rooms += [g for g in self._queue if g.room is not None and g not in rooms]
        for group in rooms:
            await self._close_room(group)

    # ------------------------------------------------------------------ figures

    def census(self) -> dict[str, int]:
        """Groups and members by mode, players waiting and players with calls enabled (for
        ``GET /metrics``)."""
        out = {"groups_mesh": 0, "groups_sfu": 0, "members_mesh": 0, "members_sfu": 0, "waiting": 0,
               "enabled": len(self.callers)}
        for world in self._worlds.values():
            for group in world.groups.values():
                out[f"groups_{group.mode}"] += 1
                out[f"members_{group.mode}"] += len(group.members)
                out["waiting"] += sum(1 for c in group.callers.values() if c.status in (WAITING, PENDING))
        return out

    def group_of(self, user: str) -> str | None:
        """The wire id of the group ``user`` is a member of, or None."""
        caller = self.callers.get(user)
        if caller is None or caller.group is None or caller.status != MEMBER:
            return None
        return caller.group.wire
