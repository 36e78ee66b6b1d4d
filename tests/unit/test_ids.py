from __future__ import annotations

import threading
import time

from hookline.ids import new_id


def test_ids_made_later_sort_after_earlier_ones() -> None:
    first = new_id("evt")
    time.sleep(0.002)
    second = new_id("evt")

    assert first.startswith("evt_") and len(first) == len("evt_") + 28
    assert first < second


def test_ids_from_many_threads_never_collide() -> None:
    made: list[str] = []

    def make() -> None:
        made.extend(new_id("dlv") for _ in range(5_000))

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(set(made)) == 20_000
