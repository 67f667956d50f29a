"""One node's ledger of blocks: what it holds, wants from an offer, accepts or refuses and why.

Pure policy over plain block and mask messages: no model, no I/O, no clock. The daemon
and the simulator both keep one per node (the daemon behind the gRPC BlockStore port,
the simulator behind an in-memory transport), so the rules below run in both:

- own task: a neighbour's block is kept (newest per origin) until the round step
  averages it in; a version older than the one held or already averaged in is a replay,
  one more than `staleness_rounds` behind this node's round is stale;
- mask agreement (docs/method.md): nodes of a task train under their cluster head's
  mask; a block from the head under another mask is held and the head's mask becomes
  pending (adopted at the next round boundary); any other block under a foreign mask
  is refused (MASK_MISMATCH). Ledgers without agreement (per-node masks or none) take
  own-task blocks under any mask;
- other tasks (foreign experts): only the freshest version is kept (federation.versions)
  and relayed onwards; an installer hook puts it into the model. With
  `federation.max_foreign_experts` set, only the tasks of the held set are wanted, taken,
  kept and so relayed (federation/holding.py decides which);
- routing codes of every task, held or not, travel as code cards: a block with no
  values and no mask, only codes, offered to a peer that lists none for that task;
- a node that lost its state (new incarnation, no checkpoint) takes copies of its own
  expert from an earlier life while it recovers (federation/recovery.py).
State changes only through the methods below.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

from solora_node.federation.cards import CARD_MASK, code_card, is_card, is_code_card
from solora_node.federation.holding import Holding, is_want, want_marker
from solora_node.federation.recovery import OwnExpertRecovery
from solora_node.federation.versions import newer, within_staleness
from solora_node.protocol.blocks import BlockDelta, BlockVersion, MaskRecord
from solora_node.protocol.messages import Descriptor, HeldBlock
from solora_node.protocol.reasons import Reason

MAX_MASKS = 64  # masks kept for relaying and checking; bounded against a flood of new ones

# Puts a foreign expert into the model under its mask record (None if unknown); returns
# OK or why it could not (the block is then not held).
Installer = Callable[[BlockDelta, MaskRecord | None], Reason]
# Puts a task's routing codes (a code card: codes, no values) into the model; OK or why not.
CodesInstaller = Callable[[BlockDelta], Reason]


class Ledger:
    """The blocks and masks of one node, and its policy toward peers' blocks."""

    def __init__(
        self,
        node_id: str,
        task: str,
        tasks: Collection[str],
        staleness_rounds: int,
        *,
        mask_agreement: bool = True,
        installer: Installer | None = None,
        codes_installer: CodesInstaller | None = None,
        holding: Holding | None = None,
        incarnation: int = 0,
    ) -> None:
        if staleness_rounds < 0:
            raise ValueError(f"staleness_rounds must be >= 0, got {staleness_rounds}")
        self.node_id = node_id
        self.task = task
        self.tasks = frozenset(tasks)
        self.staleness_rounds = staleness_rounds
        self.mask_agreement = mask_agreement
        self._installer = installer
        self._codes_installer = codes_installer
        # What to hold of other tasks; uncapped unless the caller passes a capped one.
        self.holding = holding if holding is not None else Holding(task, sorted(tasks), None)
        self.incarnation = incarnation  # this process's life; 0 in the simulator
        self._recovery = OwnExpertRecovery(node_id, incarnation)
        self._round = 0
        self._mask_id: str | None = None  # the mask this node trains under; None before it has one
        self._own: BlockDelta | None = None  # snapshot of own block offered to peers
        self._cluster: dict[str, BlockDelta] = {}  # origin -> newest same-task block held
        self._merged: dict[str, BlockVersion] = {}  # origin -> its version last averaged in
        self._foreign: dict[str, BlockDelta] = {}  # task -> freshest block of another task
        self._cards: dict[str, BlockDelta] = {}  # task -> routing codes of that task
        self._masks: collections.OrderedDict[str, MaskRecord] = collections.OrderedDict()
        self._head: str | None = None
        self._pending: MaskRecord | None = None

    # ------------------------------------------------------------------ reads

    @property
    def round(self) -> int:
        return self._round

    @property
    def mask_id(self) -> str | None:
        return self._mask_id

    @property
    def head(self) -> str | None:
        return self._head

    @property
    def own(self) -> BlockDelta | None:
        return self._own

    def cluster_blocks(self) -> Mapping[str, BlockDelta]:
        return dict(self._cluster)

    def foreign_blocks(self) -> Mapping[str, BlockDelta]:
        return dict(self._foreign)

    def mask(self, mask_id: str) -> MaskRecord | None:
        return self._masks.get(mask_id)

    def held(self) -> list[BlockDelta]:
        """Every block this node holds: own snapshot, foreign experts, neighbours' blocks."""
        blocks = [self._own, *self._foreign.values(), *self._cluster.values()]
        return [b for b in blocks if b is not None]

    def held_versions(self) -> list[tuple[BlockVersion, str]]:
        return [(b.version, b.mask_id) for b in self.held()]

    def code_cards(self) -> Mapping[str, BlockDelta]:
        """The routing codes this node has, by task (its own included once published)."""
        return dict(self._cards)

    def held_set(self) -> frozenset[str]:
        """The foreign tasks this node holds (or wants) at its current round."""
        return self.holding.held_set(self._round)

    def experts_held(self) -> frozenset[str] | None:
        """Tasks whose expert this node holds (own included) when capped; None: all of them."""
        if not self.holding.capped:
            return None
        return frozenset([self.task, *self._foreign])

    def advertised(self) -> list[HeldBlock]:
        """The Hello's list: held blocks, code cards, and the demand to relay (holding.py)."""
        blocks = [HeldBlock(version=v, mask_id=m) for v, m in self.held_versions()]
        cards = [HeldBlock(version=c.version, mask_id=CARD_MASK) for c in self._cards.values()]
        wants = [want_marker(t, r) for t, r in sorted(self.holding.wants(self._round).items())]
        return [*blocks, *cards, *wants]

    @property
    def recovered(self) -> BlockDelta | None:
        """The freshest copy of this node's own expert from an earlier life, if any."""
        return self._recovery.best

    def highest_peer_round(self) -> int:
        return max((d.version.round for d in self._cluster.values()), default=0)

    def cluster_mask_candidate(self) -> MaskRecord | None:
        """At calibration time: the mask this node's cluster already trains under, if any.

        Prefers the head's block, then the lowest origin id (deterministic)."""
        candidates = sorted(
            self._cluster.values(),
            key=lambda d: (d.version.origin != self._head, d.version.origin),
        )
        for delta in candidates:
            record = self._masks.get(delta.mask_id)
            if record is not None:
                return record
        return None

    def fresh_cluster_blocks(self, current_round: int) -> dict[str, BlockDelta]:
        """Neighbours' latest own-task blocks within the staleness bound (under our mask
        when the cluster agrees on one)."""
        if self.mask_agreement and self._mask_id is None:
            return {}
        return {
            origin: delta
            for origin, delta in self._cluster.items()
            if (not self.mask_agreement or delta.mask_id == self._mask_id)
            and within_staleness(delta.version.round, current_round, self.staleness_rounds)
        }

    # ------------------------------------------------------------------ local changes

    def set_head(self, head: str | None) -> None:
        self._head = head

    def train_under(self, record: MaskRecord | None, mask_id: str | None = None) -> None:
        """This node now trains under `record` (calibrated or adopted), or a bare mask id."""
        if record is not None:
            self.remember_mask(record)
            mask_id = record.mask_id
        self._mask_id = mask_id
        if self._pending is not None and self._pending.mask_id == mask_id:
            self._pending = None

    def take_pending_mask(self) -> MaskRecord | None:
        """The head's mask to adopt at this round boundary, if one arrived; clears it."""
        record, self._pending = self._pending, None
        return record

    def advance(self, round_: int) -> None:
        """Enter `round_` without publishing (no own block yet, or resuming)."""
        self._round = round_
        self._drop_unheld()

    def _drop_unheld(self) -> None:
        """At a round boundary: forget foreign experts the held set no longer names."""
        self.holding.forget(self._round)
        held = self.held_set()
        for task in [t for t in self._foreign if t not in held]:
            del self._foreign[task]

    def record_route(self, task: str, *, held: bool) -> None:
        """Own routing sent a prompt to `task` (serving); a miss makes it wanted."""
        self.holding.record_route(task, self._round, held=held)

    def publish(self, delta: BlockDelta, record: MaskRecord | None = None) -> None:
        """Snapshot own block at a round boundary: what peers get until the next one."""
        self._round = delta.version.round
        self._own = delta
        if record is not None:
            self.remember_mask(record)
        if delta.codes:
            self._cards[delta.task] = code_card(delta)
        self._drop_unheld()

    def remember_mask(self, record: MaskRecord) -> None:
        self._masks[record.mask_id] = record
        self._masks.move_to_end(record.mask_id)
        while len(self._masks) > MAX_MASKS:
            self._masks.popitem(last=False)

    def merged(self, origins: Iterable[str]) -> None:
        """These neighbours' held blocks were averaged in: drop them, never take them again."""
        for origin in origins:
            delta = self._cluster.pop(origin, None)
            if delta is not None:
                last = self._merged.get(origin)
                if newer(delta.version, last):
                    self._merged[origin] = delta.version

    def begin_recovery(self) -> None:
        """Start taking copies of this node's own expert from earlier lives."""
        self._recovery.active = True

    def finish_recovery(self) -> BlockDelta | None:
        """Stop recovering; the freshest copy received, if any."""
        return self._recovery.finish()

    def restore_foreign(self, delta: BlockDelta) -> None:
        """A foreign expert read back from a checkpoint (already in the model)."""
        self._foreign[delta.task] = delta
        if delta.codes:
            self._cards[delta.task] = code_card(delta)

    # ------------------------------------------------------------------ toward peers

    def offer_to(self, peer_task: str, peer_held: Iterable[HeldBlock]) -> list[BlockDelta]:
        """`offer` for a peer's Hello list: notes the demand it relays, and adds the code
        cards of tasks it lists none for (a card's round is ours, so it is never stale)."""
        entries = list(peer_held)
        self.holding.note_wants(entries)
        blocks = [e.version for e in entries if not is_want(e) and not is_card(e)]
        has_codes = {e.version.task for e in entries if is_card(e)} | {peer_task}
        cards = [
            dataclasses.replace(
                card,
                version=dataclasses.replace(
                    card.version, round=max(card.version.round, self._round)
                ),
            )
            for task, card in sorted(self._cards.items())
            if task not in has_codes
        ]
        return [*self.offer(peer_task, blocks), *cards]

    def offer(self, peer_task: str, peer_held: Iterable[BlockVersion]) -> list[BlockDelta]:
        """What to send a peer of `peer_task` that holds `peer_held`: own block and relayed
        foreign experts it lacks (for other tasks: only if fresher than its copy)."""
        theirs: dict[str, list[BlockVersion]] = collections.defaultdict(list)
        for version in peer_held:
            theirs[version.task].append(version)
        offered = []
        for block in [self._own, *self._foreign.values()]:
            if block is None:
                continue
            versions = theirs.get(block.task, [])
            if block.version in versions:
                continue
            if block.task != peer_task and any(not newer(block.version, v) for v in versions):
                continue  # they already hold this task's expert at least as fresh
            offered.append(block)
        return offered

    def wants_card(self, task: str) -> bool:
        return task in self.tasks and task != self.task and task not in self._cards

    def wants_delta(self, version: BlockVersion) -> bool:
        if version.task not in self.tasks:
            return False
        if version.task == self.task:
            if version.origin == self.node_id:
                return self._recovery.wants(version)  # only a copy of an earlier life
            return self._refusal(version) is None
        if version.task not in self.held_set():
            return False  # capped: not ours to hold or relay
        held = self._foreign.get(version.task)
        return newer(version, held.version if held is not None else None)

    def wants(self, offered: Sequence[Descriptor]) -> list[int]:
        """item_ids of the offered items to take: wanted blocks, then the masks they need."""
        deltas = [
            d
            for d in offered
            if d.kind == "delta"
            and (self.wants_card(d.task) if d.mask_id == CARD_MASK else self.wants_delta(d.version))
        ]
        needed = {d.mask_id for d in deltas if d.mask_id not in self._masks}
        masks = [d for d in offered if d.kind == "mask" and d.mask_id in needed]
        return [d.item_id for d in masks] + [d.item_id for d in deltas]

    def accept_mask(self, record: MaskRecord) -> Reason:
        if record.task not in self.tasks:
            return Reason.UNKNOWN_TASK
        self.remember_mask(record)
        return Reason.OK

    def accept_delta(self, delta: BlockDelta) -> Reason:
        """Take a validated block, or say why not."""
        if delta.task not in self.tasks:
            return Reason.UNKNOWN_TASK
        if delta.mask_id == CARD_MASK:
            return self._accept_card(delta)
        if delta.task == self.task:
            return self._accept_own_task(delta)
        return self._accept_foreign(delta)

    def _accept_card(self, card: BlockDelta) -> Reason:
        if not is_code_card(card) or card.task == self.task:
            return Reason.REFUSED_BY_STORE  # values without a mask, or our own task's codes
        if card.task in self._cards:
            return Reason.OK  # raced in through another neighbour; the first one stays
        if self._codes_installer is not None:
            verdict = self._codes_installer(card)
            if verdict is not Reason.OK:
                return verdict
        self._cards[card.task] = card
        return Reason.OK

    def _refusal(self, version: BlockVersion) -> Reason | None:
        """Why an own-task version would be refused on its version alone, if it would."""
        if not within_staleness(version.round, self._round, self.staleness_rounds):
            return Reason.STALE_ROUND
        held = self._cluster.get(version.origin)
        if held is not None and newer(held.version, version):
            return Reason.STALE_ROUND  # a replay of an older version
        merged = self._merged.get(version.origin)
        if merged is not None and not newer(version, merged):
            return Reason.STALE_ROUND  # already averaged in
        if held is not None and version == held.version:
            return Reason.OK  # the same version again (another path): nothing to do
        return None

    def _accept_own_task(self, delta: BlockDelta) -> Reason:
        v = delta.version
        if v.origin == self.node_id:
            if self._recovery.wants(v):
                self._recovery.offer(delta)  # applied by the daemon before it trains on
                return Reason.OK
            return Reason.REFUSED_BY_STORE  # our own block echoed back
        refusal = self._refusal(v)
        if refusal is not None:
            return refusal
        if self.mask_agreement and self._mask_id is not None and delta.mask_id != self._mask_id:
            record = self._masks.get(delta.mask_id)
            if v.origin != self._head or self._head == self.node_id or record is None:
                return Reason.MASK_MISMATCH
            self._pending = record  # adopted at the round boundary
        self._cluster[v.origin] = delta
        return Reason.OK

    def _accept_foreign(self, delta: BlockDelta) -> Reason:
        if delta.task not in self.held_set():
            return Reason.REFUSED_BY_STORE  # capped: outside the held set
        held = self._foreign.get(delta.task)
        if held is not None and not newer(delta.version, held.version):
            return Reason.OK  # a copy raced in through another neighbour; nothing to do
        if self._installer is not None:
            verdict = self._installer(delta, self._masks.get(delta.mask_id))
            if verdict is not Reason.OK:
                return verdict
        self._foreign[delta.task] = delta
        if delta.codes:
            self._cards[delta.task] = code_card(delta)
        return Reason.OK
