"""Scratch exploration for the task head (not part of the product or of training).

How the character n-gram, form-feature and all-rules figures in docs/router-model-card.md
("Character n-grams: better on CV, worse off Auto-J") were explored: the training set of
`tools/train_task_head.py`, its 5-fold stratified folds (seeds 12 and 13), scikit-learn's
`saga` solver at tol 1e-3 (about 5x quicker than the shipped lbfgs), no pruning or quantization.
Kept as it was run; the shipped pipeline's own CV is `python tools/train_task_head.py --cv char`.
Usage: python tools/task_head_explore.py  (caches features in /tmp/f1/cache.pkl; ~15 min)
"""

# ruff: noqa
import sys, re, pickle, time, os
from pathlib import Path
from zlib import crc32

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))
import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold
import train_task_head as T
from routing_data import load_autoj, load_routerbench, DATA
from batchroute import classifier as C, task_head
from batchroute.learned import features


def h(s):
    return crc32(s.encode("utf-8", "surrogatepass"))


def all_rules(text):
    window = text if len(text) <= C._HEAD + C._TAIL else text[: C._HEAD] + "\n" + text[-C._TAIL :]
    code = any(x in window for x in C._CODE_HINTS) and C._CODE.search(window) is not None
    w = window.lower()
    vocab = set(C._WORD.findall(w))
    out = []
    for task, rule, trig, fires in C._RULES:
        if (not trig or not vocab.isdisjoint(trig)) and fires(w, code):
            out.append(h("#hm:" + rule))
    if code:
        out.append(h("#hm:code"))
    return out


NUM = re.compile(r"\d+(?:\.\d+)?")
OPS = re.compile(
    r"\d\s*[-+*/^×÷=<>]\s*\(?\d|[a-z]\s*[\^=]\s*\d|\d\s*[a-z]\b|\\frac|\$[^$]{1,40}\$|\bsqrt\b"
)
WH = re.compile(
    r"^\W*(what|who|whom|whose|when|where|which|why|how|is|are|was|were|do|does|did|can|could|should|would|will|has|have)\b"
)
ROLE = re.compile(r"\b(pretend|act as|you are|imagine you|role|character|persona|as if you)\b")


def form(text):
    t = text.strip()
    lo = t.lower()
    nums = len(NUM.findall(t[:1600]))
    out = [
        "#f:num%d"
        % (0 if nums == 0 else 1 if nums == 1 else 2 if nums <= 3 else 3 if nums <= 8 else 4)
    ]
    if OPS.search(lo[:1600]):
        out.append("#f:ops")
    if t.endswith("?"):
        out.append("#f:endq")
    q = t.count("?")
    out.append("#f:q%d" % min(q, 3))
    if WH.match(lo):
        out.append("#f:whstart")
    if "```" in t:
        out.append("#f:fence")
    lines = t.split("\n")
    first = lines[0]
    rest = len(t) - len(first)
    out.append("#f:rest%d" % (0 if rest < 20 else 1 if rest < 200 else 2 if rest < 1000 else 3))
    out.append("#f:first%d" % min(int(np.log2(len(first) + 1)), 12))
    if re.search(r":\s*\n", t):
        out.append("#f:colonblock")
    if re.search(r"[\"“][^\"”]{80,}[\"”]", t):
        out.append("#f:quoteblock")
    if ROLE.search(lo[:400]):
        out.append("#f:role")
    sents = len(re.findall(r"[.!?](\s|$)", t[:1600]))
    out.append("#f:sent%d" % min(sents, 6))
    return [h(x) for x in out]


def char_ngrams(text, n=(3, 4), head=200):
    s = " " + " ".join(text[:head].lower().split()) + " "
    out = set()
    for k in n:
        for i in range(len(s) - k + 1):
            out.add(h("#c:" + s[i : i + k]))
    return list(out)


CACHE = Path("/tmp/f1/cache.pkl")
CACHE.parent.mkdir(parents=True, exist_ok=True)


def load(mapfn=None):
    texts, labels = T.task_data(DATA)
    cats = [i.group for i in load_autoj("train", DATA)]
    cats += ["mbpp"] * (len(texts) - len(cats))
    if CACHE.exists():
        d = pickle.load(open(CACHE, "rb"))
    else:
        d = dict(
            words=[features(t) for t in texts],
            lead=[task_head.lead_features(t) for t in texts],
            heur=[task_head.heuristic_features(t) for t in texts],
            allr=[all_rules(t) for t in texts],
            form=[form(t) for t in texts],
            ch=[char_ngrams(t) for t in texts],
        )
        pickle.dump(d, open(CACHE, "wb"))
    return texts, labels, cats, d


def design(rows_w, rows_s, scale, min_df=2, tr=None):
    df = {}
    for r in rows_w if tr is None else [rows_w[i] for i in tr]:
        for f in r:
            df[f] = df.get(f, 0) + 1
    sids = {f for r in rows_s for f in r}
    ids = sorted({f for f, n in df.items() if n >= min_df} | sids)
    col = {f: i for i, f in enumerate(ids)}
    return col


def matrix(col, rows_w, rows_s, scale, idx):
    indptr, ind, dat = [0], [], []
    for i in idx:
        c = {x: 1.0 for x in map(col.get, rows_w[i]) if x is not None}
        c |= {x: scale for x in map(col.get, rows_s[i]) if x is not None}
        ind.extend(c)
        dat.extend(c.values())
        indptr.append(len(ind))
    return csr_matrix((np.asarray(dat), ind, indptr), shape=(len(idx), len(col)))


def cv(labels, rows_w, rows_s, scale=3.0, c=0.5, cw="balanced", seed=12, ret=False):
    labels = np.asarray(labels)
    preds = np.empty(len(labels), dtype=object)
    for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(labels, labels):
        col = design(rows_w, rows_s, scale, tr=tr)
        m = LogisticRegression(C=c, class_weight=cw, max_iter=3000)
        m.fit(matrix(col, rows_w, rows_s, scale, tr), labels[tr])
        preds[te] = m.predict(matrix(col, rows_w, rows_s, scale, te))
    f1 = f1_score(labels, list(preds), average="macro")
    acc = float(np.mean(preds == labels))
    return (f1, acc, preds) if ret else (f1, acc)


def cvs(labels, rows_w, rows_s, scale=3.0, c=0.5, cw="balanced", seeds=(12, 13)):
    from sklearn.metrics import f1_score as F

    labels = np.asarray(labels)
    res = []
    per = []
    for seed in seeds:
        preds = np.empty(len(labels), dtype=object)
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=seed).split(labels, labels):
            col = design(rows_w, rows_s, scale, tr=tr)
            m = LogisticRegression(C=c, class_weight=cw, solver="saga", max_iter=300, tol=1e-3)
            m.fit(matrix(col, rows_w, rows_s, scale, tr), labels[tr])
            preds[te] = m.predict(matrix(col, rows_w, rows_s, scale, te))
        res.append(F(labels, list(preds), average="macro"))
        per.append(F(labels, list(preds), average=None, labels=sorted(set(labels))))
    return float(np.mean(res)), res, np.mean(per, axis=0)


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore")
    t, l, c, d = load()
    W = lambda *keys: [sum((d[k][i] for k in keys), []) for i in range(len(t))]
    add = lambda a, b: [x + y for x, y in zip(a, b)]
    base, heur = W("words", "lead"), W("heur")
    ch = {h: [char_ngrams(x, n=(3, 4), head=h) for x in t] for h in (60, 100, 200)}
    cfgs = [
        ("base", base, heur, 3.0, 0.5),
        ("+form(words)", W("words", "lead", "form"), heur, 3.0, 0.5),
        ("+allrules(stack)", base, W("heur", "allr"), 3.0, 0.5),
        ("+allrules(words)", W("words", "lead", "allr"), heur, 3.0, 0.5),
        ("C=0.25", base, heur, 3.0, 0.25),
        ("C=1", base, heur, 3.0, 1.0),
        ("C=2", base, heur, 3.0, 2.0),
        ("+char 3-4 head 200", add(base, ch[200]), heur, 3.0, 0.5),
        (
            "+char 4 head 200",
            add(base, [char_ngrams(x, n=(4,), head=200) for x in t]),
            heur,
            3.0,
            0.5,
        ),
        ("+char 3-4 head 100", add(base, ch[100]), heur, 3.0, 0.5),
        ("+char 3-4 head 60", add(base, ch[60]), heur, 3.0, 0.5),
    ]
    for name, w, s, sc, C in cfgs:
        m, res, per = cvs(l, w, s, scale=sc, c=C)
        print(f"{name:22s} CV macro-F1 {m:.3f} {['%.3f' % r for r in res]}", flush=True)
    # the short-prompt proxy (< 300 characters) and a heavier stack, seed 12
    L = np.asarray(l)
    short = np.array([len(x) < 300 for x in t])
    for name, w, s, sc in [
        ("base", base, heur, 3.0),
        ("char60", add(base, ch[60]), heur, 3.0),
        ("char60 heur=10", add(base, ch[60]), heur, 10.0),
    ]:
        preds = np.empty(len(L), dtype=object)
        for tr, te in StratifiedKFold(5, shuffle=True, random_state=12).split(L, L):
            col = design(w, s, sc, tr=tr)
            m = LogisticRegression(
                C=0.5, class_weight="balanced", solver="saga", max_iter=300, tol=1e-3
            )
            m.fit(matrix(col, w, s, sc, tr), L[tr])
            preds[te] = m.predict(matrix(col, w, s, sc, te))
        print(
            f"{name:16s} CV macro-F1 all {f1_score(L, list(preds), average='macro'):.3f}"
            f"  short {f1_score(L[short], list(preds[short]), average='macro'):.3f}",
            flush=True,
        )
