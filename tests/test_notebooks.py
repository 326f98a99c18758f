"""The chapters' notebook twins (book/<chapter>.ipynb) that Colab, Binder and a download open.

scripts/make_notebooks.py writes them from the MyST chapters; these tests keep them in
step with the chapters, check the install cell that makes a notebook run outside the
checkout, and Binder's environment. The browser test (tests/test_book.py) follows the
site's launch links to these files.
"""
import importlib.util
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from myst_nb.core.read import read_myst_markdown_notebook

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"


def load_script():
    spec = importlib.util.spec_from_file_location("make_notebooks", REPO / "scripts" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_notebooks = load_script()
CHAPTERS = make_notebooks.chapters()


def test_every_chapter_with_code_has_an_up_to_date_notebook(capsys):
    assert [page.stem for page in CHAPTERS] == [f"ch{i}" + rest for i, rest in enumerate(
        ["_what_is_an_llm", "_transformer", "_self_attention", "_gpt_pretraining", "_fine_tuning"], start=1)]
    code = make_notebooks.main(["--check"])
    assert code == 0, f"notebooks or install cells are stale: {capsys.readouterr().out.strip()}"


@pytest.mark.parametrize("page", CHAPTERS, ids=lambda page: page.stem)
def test_the_notebook_has_the_pages_cells_and_installs_first(page):
    notebook = nbformat.read(page.with_suffix(".ipynb"), as_version=4)
    nbformat.validate(notebook)
    page_cells = read_myst_markdown_notebook(page.read_text(encoding="utf-8")).cells
    plain = make_notebooks.plain_markdown
    assert [(c.cell_type, c.source) for c in notebook.cells] == [
        (c.cell_type, plain(c.source) if c.cell_type == "markdown" else c.source) for c in page_cells]
    assert not any("{term}" in c.source or "{cite}" in c.source for c in notebook.cells if c.cell_type == "markdown")
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "twins carry no outputs"
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert make_notebooks.INSTALL_TAG in first_code.metadata.get("tags", []), "the install cell must come first"
    url = yaml.safe_load((BOOK / "_config.yml").read_text())["repository"]["url"]
    assert f"git+{url}" in first_code.source, "the cell installs from book/_config.yml's repository.url"
    assert notebook.metadata["kernelspec"]["name"] == "python3"


def run_install_cell(monkeypatch, installed: bool) -> list:
    """Execute the install cell's code with find_spec and subprocess.run stubbed; return the pip calls."""
    source = next(c for c in nbformat.read(CHAPTERS[0].with_suffix(".ipynb"), as_version=4).cells
                  if c.cell_type == "code").source
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda args, check: calls.append(args))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (real_find_spec(name, *a) if installed else None)
                        if name == "llmcourse" else real_find_spec(name, *a))
    exec(compile(source, "install-cell", "exec"), {})
    return calls


def test_the_install_cell_installs_only_where_llmcourse_is_missing(monkeypatch):
    assert run_install_cell(monkeypatch, installed=True) == [], "the book build must not pip install"
    calls = run_install_cell(monkeypatch, installed=False)
    assert len(calls) == 1
    assert calls[0][:4] == [sys.executable, "-m", "pip", "install"]
    assert calls[0][-1].startswith("llmcourse[book] @ git+https://")


def test_a_stale_notebook_or_install_cell_is_reported(tmp_path, monkeypatch, capsys):
    book = tmp_path / "book"
    book.mkdir()
    for name in ("_config.yml", "_toc.yml"):
        (book / name).write_text((BOOK / name).read_text())
    for page in BOOK.glob("*.md"):
        (book / page.name).write_text(page.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setattr(make_notebooks, "BOOK", book)
    assert make_notebooks.main(["--check"]) == 1, "no notebooks at all: stale"
    assert make_notebooks.main([]) == 0
    assert make_notebooks.main(["--check"]) == 0, "writing them makes the check pass"
    edited = book / CHAPTERS[1].name
    edited.write_text(edited.read_text(encoding="utf-8").replace("import torch", "import torch  # edited", 1),
                      encoding="utf-8")
    capsys.readouterr()
    assert make_notebooks.main(["--check"]) == 1
    assert CHAPTERS[1].stem + ".ipynb" in capsys.readouterr().out
    # The install cell is rewritten in place, never added twice.
    once = edited.read_text(encoding="utf-8")
    assert make_notebooks.with_install_cell(once, "https://example.org/a/b").count(make_notebooks.INSTALL_TAG) == 1


def test_glossary_links_and_citations_become_plain_words():
    text = "A {term}`head <attention head>` and {term}`LoRA` {cite}`hu2022lora, raschka2024build`."
    assert make_notebooks.plain_markdown(text) == "A head and LoRA [hu2022lora, raschka2024build]."


def test_binder_installs_cpu_torch_and_the_package():
    requirements = (REPO / "binder" / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in requirements
    assert "-r ../requirements.txt" in requirements, "Binder uses the course's own pins"
    post_build = REPO / "binder" / "postBuild"
    assert post_build.stat().st_mode & 0o111, "postBuild must be executable"
    assert "pip install --no-deps -e ." in post_build.read_text()


@pytest.mark.slow
def test_the_gpt2_setting_runs_chapter_5_on_gpt2_weights(tmp_path, monkeypatch):
    """LLMCOURSE_GPT2_FOLDER points chapter 5 at a Hugging Face GPT-2 folder: the page's
    first cells then load those weights and GPT-2's tokenizer (a small random model saved
    in the real format stands in for GPT-2 small)."""
    transformers = pytest.importorskip("transformers")
    from nbclient import NotebookClient

    folder = tmp_path / "gpt2"
    config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, vocab_size=50257)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    notebook = nbformat.read(BOOK / "ch5_fine_tuning.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    upto = next(i for i, c in enumerate(code) if "model = start_model()" in c.source)
    check = nbformat.v4.new_code_cell(
        "print('RESULT', type(tokenizer).__name__, PAD, PREAMBLE == ft.ALPACA_PREAMBLE, "
        "model.config.emb_dim, model.config.n_layers, model.config.vocab_size)")
    notebook.cells = code[:upto + 1] + [check]
    monkeypatch.setenv("LLMCOURSE_GPT2_FOLDER", str(folder))  # the kernel inherits the environment
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(BOOK)}}).execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "RESULT Encoding 50256 True 32 2 50257" in printed, printed
