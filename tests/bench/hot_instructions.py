"""Instructions per call of the request/answer side's per-record steps, exact (issue 11;
needs valgrind, its `callgrind.h` and a C compiler).

    python tests/bench/hot_instructions.py before=/tmp/b5d2829 after=.

Each tree's steps run in a fresh interpreter under `valgrind --tool=callgrind`: a step is run
200 times to warm up, callgrind's counters are zeroed, it is run 2,000 times, and the counters
are dumped (`CALLGRIND_ZERO_STATS` / `CALLGRIND_DUMP_STATS_AT`, from a tiny C library built
here and called through ctypes), so each figure is that step's instructions per call and
nothing else's, the same at any load. ~880 of each figure is the harness (a lambda call and
the loop: the `noop` row). The inputs are the bench's: a record of `_harness.records`, the
job of `_harness.write_job` (task given: translation), an answer as the simulator writes it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import PY

HELPER = r"""
#include <valgrind/callgrind.h>
void vg_zero(void) { CALLGRIND_ZERO_STATS; }
void vg_dump(const char *s) { CALLGRIND_DUMP_STATS_AT(s); }
"""

STEPS = r"""
import ctypes, sys, tempfile
from decimal import Decimal
from pathlib import Path
sys.path.insert(0, TREE + "/tests/bench")
from multidict import CIMultiDict, CIMultiDictProxy
from _harness import write_job
from batchroute.budget import Budget, prompt_token_bound
from batchroute.client.parse import parse_completion, parse_usage
from batchroute.client.status import generation_id_of
from batchroute.errors import keep_secret, scrub
from batchroute.plan import classification, classify_item
from batchroute.prompt import fingerprint, render_messages, request_params
from batchroute.runner import quality
from batchroute.spec import load_spec
from batchroute.types import Record
import orjson

lib = ctypes.CDLL(LIB)
keep_secret("sk-or-v1-0123456789abcdef0123456789abcdef0123456789abcdef")
spec = load_spec(write_job(Path(tempfile.mkdtemp()), 10, concurrency=128))
params = request_params(spec.request)
fields = {"id": "r0000001", "text": "Sentence number 1 to translate. " * 2, "target_lang": "French"}
rec = Record(1, "r0000001", fields)
msgs = render_messages(spec.prompt, fields)
BODY = (
    b'{"id":"gen-1765-abcdef","provider":"OpenAI","model":"openai/gpt-4o-mini",'
    b'"object":"chat.completion","created":1765000000,"choices":[{"logprobs":null,'
    b'"finish_reason":"stop","native_finish_reason":"stop","index":0,"message":{"role":'
    b'"assistant","content":"[French] Phrase numero 1 a traduire. Phrase numero 1 a '
    b'traduire.","refusal":null,"reasoning":null}}],"usage":{"prompt_tokens":31,'
    b'"completion_tokens":17,"total_tokens":48,"cost":0.0000148,"is_byok":false,'
    b'"prompt_tokens_details":{"cached_tokens":0},"cost_details":{"upstream_inference_cost":'
    b'0.0000148},"completion_tokens_details":{"reasoning_tokens":0}}}'
)
H = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json",
                                  "X-Generation-Id": "gen-1765-abcdef"}))
c = parse_completion(BODY, 200, H, model="m")
usage = orjson.loads(BODY)["usage"]
b = Budget(Decimal(100000))
steps = {
    "noop (the harness)": lambda: None,
    "render_messages": lambda: render_messages(spec.prompt, fields),
    "classification": lambda: classification(spec, rec, msgs),
    "classify_item": lambda: classify_item(spec, params, rec, msgs, None),
    "fingerprint": lambda: fingerprint(msgs, params),
    "prompt_token_bound": lambda: prompt_token_bound([m["content"] for m in msgs]),
    "scrub (a body)": lambda: scrub(BODY),
    "orjson.loads (a body)": lambda: orjson.loads(BODY),
    "parse_completion": lambda: parse_completion(BODY, 200, H, model="m"),
    "parse_usage": lambda: parse_usage(usage),
    "generation_id_of": lambda: generation_id_of(H),
    "quality.problem": lambda: quality.problem(c, spec.quality, wants_json=False),
    "try_reserve + settle": lambda: b.settle(b.try_reserve(Decimal("0.0001")), Decimal("0.00001")),
}
for name, f in steps.items():
    for _ in range(200):
        f()
    lib.vg_zero()
    for _ in range(2000):
        f()
    lib.vg_dump(name.encode())
"""


def counts(label: str, tree: Path, lib: Path, tmp: Path) -> dict[str, int]:
    out = tmp / label
    out.mkdir()
    script = out / "steps.py"
    script.write_text(f"TREE={str(tree)!r}; LIB={str(lib)!r}\n" + STEPS)
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p"]
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"}
    subprocess.run([*cmd, PY, str(script)], cwd=tree, env=env, check=True, capture_output=True)
    found: list[tuple[int, str, int]] = []  # (dump number: the steps' order, step, per call)
    for f in out.glob("cg.*.*"):
        text = f.read_text(errors="replace")
        name = re.search(r"^desc: Trigger: Client Request: (.*)$", text, re.M)
        total = re.search(r"^summary: (\d+)", text, re.M)
        if name and total:
            found.append((int(f.name.rsplit(".", 1)[1]), name.group(1), int(total.group(1))))
    return {step: total // 2000 for _, step, total in sorted(found)}


def main() -> None:
    trees = {k: Path(v).resolve() for k, v in (t.split("=", 1) for t in sys.argv[1:])}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "vgc.c").write_text(HELPER)
        lib = tmp / "libvgc.so"
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", lib, tmp / "vgc.c"], check=True)
        got = {label: counts(label, tree, lib, tmp) for label, tree in trees.items()}
    names = list(next(iter(got.values())))
    print("| step | " + " | ".join(trees) + " |")
    print("|---|" + "---|" * len(trees))
    for n in names:
        print(f"| {n} | " + " | ".join(f"{got[t].get(n, 0):,}" for t in trees) + " |")


if __name__ == "__main__":
    main()
