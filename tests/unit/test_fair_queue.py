"""The fair queue's order: round-robin across identities, arrival order within one."""

from hoshikage.engine.fair_queue import FairQueue


def _drain(queue: FairQueue) -> list[str]:
    order = []
    while queue:
        identity, item = queue.head()
        order.append(queue.pop(identity, served=True))
    return order


def test_a_newcomer_waits_one_turn_behind_a_flood_not_behind_all_of_it():
    queue = FairQueue()
    for number in range(30):
        queue.append("uid:1000", f"a{number}")
    identity, _ = queue.head()
    queue.pop(identity, served=True)  # a0 admitted: uid:1000 has had its turn
    queue.append("uid:1001", "b0")
    assert queue.head() == ("uid:1001", "b0")


def test_identities_take_turns_and_each_keeps_its_own_order():
    queue = FairQueue()
    for number in range(3):
        queue.append("key:alice", f"a{number}")
    for number in range(2):
        queue.append("key:bob", f"b{number}")
    queue.append("uid:0", "r0")
    assert _drain(queue) == ["a0", "b0", "r0", "a1", "b1", "a2"]


def test_a_dropped_request_does_not_spend_its_identitys_turn():
    queue = FairQueue()
    queue.append("a", "a0")
    queue.append("a", "a1")
    queue.append("b", "b0")
    assert queue.pop(*[queue.head()[0]], served=False) == "a0"  # cancelled while waiting
    assert queue.head() == ("a", "a1")  # still a's turn: it was not served


def test_counts_are_per_identity_and_skip_what_the_filter_rejects():
    queue = FairQueue()
    for item in ("x1", "cancelled", "x2"):
        queue.append("a", item)
    queue.append("b", "cancelled")
    assert queue.counts(lambda item: item != "cancelled") == {"a": 2}
    assert len(queue) == 4


def test_who_holds_fewer_slots_goes_first_even_if_it_came_later():
    queue = FairQueue()
    for number in range(3):
        queue.append("alice", f"a{number}")  # her first two were admitted straight away: she holds two slots
    queue.append("bob", "b0")
    assert queue.head({"alice": 2}) == ("bob", "b0")
    assert queue.head({"alice": 2, "bob": 2}) == ("alice", "a0")  # equal shares: arrival order
