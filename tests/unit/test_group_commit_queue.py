"""The group commit's queue without a database: every save is answered once, with its own
outcome, batches stay within their size, and a failed batch refuses only its callers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from uuid import uuid4

import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from services.runtime.group_commit import Group, GroupCommit, WaitTimeoutError

THREADS = 16
EACH = 40


class FakeRecorder:
    """Numbers the events of each batch; refuses the groups whose topic says so."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.position = 0
        self.lock = threading.Lock()
        self.fail_next = False
        self.release = threading.Event()
        self.release.set()

    def insert_groups(self, groups: Sequence[Group]) -> list[Sequence[int] | None]:
        self.release.wait()
        with self.lock:
            self.batches.append(len(groups))
            if self.fail_next:
                self.fail_next = False
                msg = "the disk is full"
                raise RuntimeError(msg)
            outcomes: list[Sequence[int] | None] = []
            for group in groups:
                if group.events[0].topic == "conflict":
                    outcomes.append(None)
                    continue
                ids = list(range(self.position + 1, self.position + 1 + len(group.events)))
                self.position += len(group.events)
                outcomes.append(ids)
            return outcomes


def group(events: int = 1, topic: str = "ok") -> Group:
    return Group([StoredEvent(uuid4(), 1, topic, b"{}") for _ in range(events)])


def run(count: int, work: Callable[[int], object]) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def target(number: int) -> None:
        barrier.wait()
        try:
            work(number)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "a caller was never answered"
    return errors


@pytest.mark.parametrize("writer_thread", [False, True])
def test_every_save_is_answered_once_with_its_own_ids(writer_thread: bool) -> None:
    recorder = FakeRecorder()
    committer = GroupCommit(recorder, max_batch=8, writer_thread=writer_thread)
    answers: list[Sequence[int]] = []
    conflicts: list[int] = []
    lock = threading.Lock()

    def work(number: int) -> None:
        for i in range(EACH):
            conflicting = (number + i) % 7 == 0
            try:
                ids = committer.commit(group(1 + i % 3, "conflict" if conflicting else "ok"))
            except IntegrityError:
                assert conflicting
                with lock:
                    conflicts.append(number)
            else:
                assert not conflicting
                assert len(ids) == 1 + i % 3
                with lock:
                    answers.append(ids)

    assert run(THREADS, work) == []
    committer.close()
    written = sorted(i for ids in answers for i in ids)
    assert written == list(range(1, recorder.position + 1))  # no id twice, none lost
    assert len(answers) + len(conflicts) == THREADS * EACH == sum(recorder.batches)
    assert max(recorder.batches) <= 8
    assert committer.pending == 0


def test_a_failed_batch_refuses_its_callers_and_the_next_is_written() -> None:
    recorder = FakeRecorder()
    committer = GroupCommit(recorder, window_ms=60_000, max_batch=5)
    recorder.fail_next = True
    errors = run(5, lambda _: committer.commit(group()))
    assert recorder.batches == [5]
    assert len(errors) == 5
    assert all(isinstance(e, RuntimeError) for e in errors)
    committer.window = 0.0
    assert committer.commit(group()) == [1]


def test_a_caller_of_the_writer_thread_stops_waiting_after_its_timeout() -> None:
    recorder = FakeRecorder()
    recorder.release.clear()  # the store hangs
    committer = GroupCommit(recorder, writer_thread=True)
    with pytest.raises(WaitTimeoutError):
        committer.commit(group(), timeout=0.05)
    recorder.release.set()
    committer.close()  # what was queued is written before the writer stops
    assert recorder.batches == [1]
    assert recorder.position == 1
