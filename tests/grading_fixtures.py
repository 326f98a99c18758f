"""Submissions for the grading tests, generated from the source notebook of ch3.

Each fixture starts from ``solutions/ch3/ch3.ipynb`` (full marks) and replaces the source
of some answer cells (``SOLUTION`` markers dropped, as a student's copy would have) or
changes the notebook file, and says what the grader must give it: the points of every
grade cell that differ from full marks, and a phrase the report must contain.

    python tests/grading_fixtures.py OUT   # writes OUT/<student>/ch3/ch3.ipynb
"""
from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def source(chapter: str) -> Path:
    return ROOT / "solutions" / chapter / f"{chapter}.ipynb"


def release_path(chapter: str) -> Path:
    return ROOT / "exercises" / chapter / f"{chapter}.ipynb"


def answer_keys(chapter: str) -> dict[str, str]:
    """Concept question -> its key, as the hidden test cells of solutions/ give them."""
    from llmcourse.grading.gradebook import parse_check_calls

    nb = json.loads(source(chapter).read_text())
    calls = [c for cell in nb["cells"] if cell["cell_type"] == "code"
             for c in parse_check_calls("".join(cell["source"]))]
    keys = {c.check_id: c.answer for c in calls if c.answer is not None}
    assert keys, f"no answer keys in {source(chapter)}"
    return keys


def full_points(chapter: str) -> dict[str, float]:
    """grade_id -> points of every grade cell of the source notebook."""
    nb = json.loads(source(chapter).read_text())
    return {c["metadata"]["nbgrader"]["grade_id"]: float(c["metadata"]["nbgrader"]["points"])
            for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade")}


SOURCE = source("ch3")
RELEASE = release_path("ch3")
FULL = {"test_simplified_attention": 1, "hidden_simplified_attention": 1,
        "test_scaled_dot_product_attention": 2, "hidden_scaled_dot_product_attention": 1,
        "test_causal_mask": 1, "hidden_causal_mask": 1, "test_heads": 2, "hidden_heads": 1,
        "test_multi_head_attention": 2, "hidden_multi_head_attention": 1, "test_q1": 1, "test_q2": 1}
SIMPLIFIED = ("test_simplified_attention", "hidden_simplified_attention")
SDPA = ("test_scaled_dot_product_attention", "hidden_scaled_dot_product_attention")
MASK = ("test_causal_mask", "hidden_causal_mask")
HEADS = ("test_heads", "hidden_heads")
MHA = ("test_multi_head_attention", "hidden_multi_head_attention")


@dataclass
class Fixture:
    """A submission and what grading it must give."""

    name: str
    answers: dict[str, str] = field(default_factory=dict)  # answer cell id -> new source
    zero: tuple[str, ...] = ()  # grade cells that must score 0; all others full marks
    expect: str = ""  # a phrase the report must contain
    edit: object = None  # a function changing the notebook (dict) in place
    raw: str | None = None  # the file's text, for a malformed file
    status: str = "graded"
    half: tuple[str, ...] = ()  # cells of two exercises of which one is wrong: half the points
    absent: str = ""  # a phrase the report must not contain (a hint that is not the cause)

    def points(self, chapter: str = "ch3") -> dict[str, float]:
        return {cell: 0.0 if cell in self.zero or self.status != "graded" else p / 2 if cell in self.half else p
                for cell, p in full_points(chapter).items()}


SDPA_NO_SCALE = '''def scaled_dot_product_attention(q, k, v, mask=None, dropout=0.0, training=False):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights'''
SDPA_DIM = SDPA_NO_SCALE.replace("q @ k.transpose(-2, -1)", "q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))") \
    .replace("dim=-1", "dim=-2")
SDPA_ZERO_FILL = SDPA_NO_SCALE.replace("q @ k.transpose(-2, -1)", "q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))") \
    .replace('float("-inf")', "0.0")
SDPA_NO_DROPOUT = SDPA_NO_SCALE.replace("q @ k.transpose(-2, -1)", "q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))")
SDPA_BUILTIN = '''import torch.nn.functional as F

def scaled_dot_product_attention(q, k, v, mask=None, dropout=0.0, training=False):
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return context, torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.size(-1)), dim=-1)'''
MASK_FLIPPED = '''def causal_mask(T):
    return torch.ones(T, T, dtype=torch.bool).triu()'''
HEADS_WRONG = '''def split_heads(x, n_heads):
    B, T, d = x.shape
    return x.view(B, T, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x):
    B, H, T, hd = x.shape
    return x.reshape(B, T, H * hd)'''


def monkeypatch(line: str) -> dict[str, str]:
    """A wrong causal mask, plus a line that tries to make the tests pass anyway."""
    return {"causal_mask": line + "\n\n" + MASK_FLIPPED}


def _drop_test(nb: dict, grade_id: str) -> None:
    nb["cells"] = [c for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") != grade_id]


def _edit_test(nb: dict, grade_id: str) -> None:
    for c in nb["cells"]:
        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id:
            c["source"] = "pass"


def _change_points(nb: dict) -> None:
    for c in nb["cells"]:
        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "test_causal_mask":
            c["metadata"]["nbgrader"]["points"] = 100


def _extra_grade_cell(nb: dict) -> None:
    cell = copy.deepcopy(next(c for c in nb["cells"]
                              if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "test_q1"))
    cell["metadata"]["nbgrader"]["grade_id"] = "test_extra"
    cell["id"] = "test-extra"
    nb["cells"].append(cell)


def _added_cell(code: str, before: str):
    """An edit adding a code cell with no nbgrader metadata (as a student does) before the
    cell ``before``."""
    def edit(nb: dict) -> None:
        at = next(i for i, c in enumerate(nb["cells"])
                  if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == before)
        nb["cells"].insert(at, {"cell_type": "code", "id": "added-by-student", "metadata": {},
                                "execution_count": None, "outputs": [], "source": code})
    return edit


HELPER = """def _attention_weights(x):
    return torch.softmax(x @ x.transpose(-2, -1), dim=-1)"""
SIMPLIFIED_WITH_HELPER = """def simplified_attention(x):
    weights = _attention_weights(x)
    return weights @ x, weights"""
MASK_AND_MHA = MASK + MHA
FIXTURES = [
    Fixture("solution"),
    Fixture("release", zero=tuple(FULL), expect="not written yet"),
    # typical mistakes: partial credit and a hint
    Fixture("missing_sqrt", {"scaled_dot_product_attention": SDPA_NO_SCALE}, SDPA + MHA, "missing 1/sqrt(d_k)"),
    Fixture("mask_flipped", {"causal_mask": MASK_FLIPPED}, MASK_AND_MHA, "a token sees the future"),
    Fixture("softmax_dim", {"scaled_dot_product_attention": SDPA_DIM}, SDPA + MHA, "softmax over the wrong dimension"),
    # a mask filled with 0, not -inf: every masked case fails, and no hint about dropout is given
    Fixture("mask_filled_with_zero", {"scaled_dot_product_attention": SDPA_ZERO_FILL}, SDPA + MHA,
            "values differ", absent="dropout active in eval()"),
    # right in eval mode, but dropout never applied: the hidden training case fails
    Fixture("sdpa_no_dropout", {"scaled_dot_product_attention": SDPA_NO_DROPOUT},
            ("hidden_scaled_dot_product_attention",), "of the attention weights are zero, expected about 40%"),
    Fixture("heads_merged_wrong", {"heads": HEADS_WRONG}, MHA, "heads split or merged in the wrong order",
            half=HEADS),  # split_heads is right: its share of the heads cells
    # delegation
    Fixture("import_alias", {"causal_mask": "import llmcourse.attention as helpers\n\n"
                             "def causal_mask(T):\n    return helpers.causal_mask(T)"}, MASK_AND_MHA, "llmcourse"),
    Fixture("dunder_import", {"causal_mask": "def causal_mask(T):\n"
                              "    return __import__('llm' + 'course').attention.causal_mask(T)"},
            MASK_AND_MHA, "llmcourse"),
    Fixture("sdpa_builtin", {"scaled_dot_product_attention": SDPA_BUILTIN}, SDPA + MHA,
            "not allowed in this exercise"),
    # tampering with the checks from an answer cell (the mask is wrong in all of them)
    Fixture("patch_allclose", monkeypatch("torch.allclose = lambda *a, **k: True\n"
                                          "torch.equal = lambda *a, **k: True"), MASK_AND_MHA, "a token sees the future"),
    Fixture("patch_numpy", monkeypatch("import numpy as np\nnp.testing.assert_allclose = lambda *a, **k: None"),
            MASK_AND_MHA, "numpy"),
    Fixture("patch_check", monkeypatch("check = lambda *a, **k: None"), MASK_AND_MHA, "a token sees the future"),
    Fixture("patch_import", monkeypatch("import builtins\n_real = builtins.__import__\n"
                                        "builtins.__import__ = lambda name, *a, **k: _real(name, *a, **k)"),
            MASK_AND_MHA, "builtins"),
    Fixture("patch_sys_modules", monkeypatch("import sys, types\nfake = types.ModuleType('llmcourse.grading')\n"
                                             "fake.check = lambda *a, **k: None\n"
                                             "sys.modules['llmcourse.grading'] = fake"),
            MASK_AND_MHA, "uses llmcourse"),
    Fixture("patch_seed", monkeypatch("torch.manual_seed = lambda seed: torch.default_generator"),
            MASK_AND_MHA, "a token sees the future"),
    # a cell the student added: an honest helper counts, a patch in it is refused like one in an answer
    Fixture("helper_cell", {"simplified_attention": SIMPLIFIED_WITH_HELPER}, expect="was added to the notebook",
            edit=_added_cell(HELPER, before="simplified_attention")),
    Fixture("plot_cell", expect="was added to the notebook",  # matplotlib is the feedback run's, not the grader's
            edit=_added_cell("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])", before="causal_mask")),
    Fixture("added_cell_patch", {"causal_mask": MASK_FLIPPED}, MASK_AND_MHA, "a token sees the future",
            edit=_added_cell("import torch\ntorch.allclose = lambda *a, **k: True\n"
                             "torch.equal = lambda *a, **k: True", before="causal_mask")),
    # tampering with test cells
    Fixture("edit_test", {"causal_mask": MASK_FLIPPED}, MASK_AND_MHA, "was edited",
            edit=lambda nb: _edit_test(nb, "test_causal_mask")),
    Fixture("delete_test", {"causal_mask": MASK_FLIPPED}, MASK_AND_MHA, "was missing",
            edit=lambda nb: _drop_test(nb, "test_causal_mask")),
    Fixture("hardcoded", {"simplified_attention": "def simplified_attention(x):\n"
                          "    return torch.zeros(6, 4), torch.full((6, 6), 1 / 6)"}, SIMPLIFIED, "values differ"),
    # runaway code
    Fixture("infinite_loop", {"simplified_attention": "while True:\n    pass"}, SIMPLIFIED, "time limit"),
    Fixture("os_exit", {"q2": "import os\nos._exit(0)"}, tuple(FULL), "os"),
    Fixture("huge_output", {"q1": 'print("x" * 60_000_000)\n\ndef q1():\n    return "c"'}),
    # reads every notebook in reach and prints it into its own feedback, hunting for the key
    Fixture("peek_notebook", {"q1": 'import glob\nfor name in glob.glob("**/*.ipynb", recursive=True):\n'
                              '    print("PEEKED", name, open(name).read())\n\ndef q1():\n    return "a"'},
            ("test_q1",), "glob"),
    Fixture("huge_memory", {"simplified_attention": "big = torch.empty(5 * 2**30)\n\n"
                            "def simplified_attention(x):\n    return big"}, SIMPLIFIED, "memory"),
    # malformed files
    Fixture("invalid_json", raw='{"cells": [', status="rejected", expect="not a readable notebook"),
    Fixture("changed_metadata", edit=_change_points, status="rejected", expect="metadata of cell 'test_causal_mask'"),
    Fixture("extra_cell", edit=_extra_grade_cell, status="rejected", expect="not part of the assignment"),
]
BY_NAME = {f.name: f for f in FIXTURES}


def notebook_text(fixture, chapter: str = "ch3") -> str:
    """The submitted file of ``fixture`` (any chapter's: a ``raw`` text, the release, or the
    source with some answer cells replaced and ``edit`` applied)."""
    if getattr(fixture, "raw", None) is not None:
        return fixture.raw
    if fixture.name == "release":
        return release_path(chapter).read_text()
    nb = json.loads(source(chapter).read_text())
    known = set()
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        known.add(grade_id)
        if grade_id in fixture.answers:
            cell["source"] = fixture.answers[grade_id]
    missing = set(fixture.answers) - known
    assert not missing, f"fixture {fixture.name}: no answer cells {missing}"
    if fixture.edit:
        fixture.edit(nb)
    return json.dumps(nb, indent=1)


def write_submissions(chapter: str, out: Path, fixtures: list) -> None:
    """Write ``out/<name>/<chapter>/<chapter>.ipynb`` for each fixture (nbgrader's layout)."""
    for fixture in fixtures:
        path = Path(out) / fixture.name / chapter / f"{chapter}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(notebook_text(fixture, chapter))


def write_class(out: Path, names: list[str] | None = None) -> list[Fixture]:
    """Write ``out/<name>/ch3/ch3.ipynb`` for each fixture (all by default)."""
    chosen = [BY_NAME[n] for n in names] if names else FIXTURES
    write_submissions("ch3", out, chosen)
    return chosen

if __name__ == "__main__":
    write_class(Path(sys.argv[1]))
