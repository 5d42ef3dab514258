"""Generation ids learnt in flight reach `Book.identified` one loop step later, together and
in order (`runner.work.IdQueue`: one loop callback a step instead of one a call, issue 11)."""

from __future__ import annotations

import asyncio

from batchroute.runner.work import IdQueue, IdSeen


def test_ids_of_one_step_are_handed_on_together_at_the_next_in_order() -> None:
    got: list[tuple[tuple[str, int], str]] = []

    async def main() -> tuple[list[tuple[tuple[str, int], str]], int]:
        loop = asyncio.get_running_loop()
        queue = IdQueue(lambda token, gen_id: got.append((token, gen_id)))
        seen = [IdSeen(queue, (f"k{i}", 1)) for i in range(3)]
        before = len(loop._ready)  # type: ignore[attr-defined]
        for i, s in enumerate(seen):
            s.generation_id = f"gen-{i}"
        seen[1].generation_id = "gen-1"  # the same id again: not handed on twice
        seen[2].generation_id = None  # no id: nothing
        scheduled = len(loop._ready) - before  # type: ignore[attr-defined]
        early = list(got)
        await asyncio.sleep(0)
        seen[0].generation_id = "gen-0b"  # a later step: handed on at the step after it
        await asyncio.sleep(0)
        return early, scheduled

    early, scheduled = asyncio.run(main())
    assert early == []  # not at once: most answers land in the step their headers came in
    assert scheduled == 1  # one callback for the step's three ids
    assert got == [(("k0", 1), "gen-0"), (("k1", 1), "gen-1"), (("k2", 1), "gen-2"),
                   (("k0", 1), "gen-0b")]  # fmt: skip
