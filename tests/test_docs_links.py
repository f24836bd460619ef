"""Every relative link in README.md and docs/*.md resolves: the file exists and, for a
link into a Markdown file, the ``#anchor`` is one of its headings (GitHub's slugs)."""

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_INLINE = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


def _prose(text):
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def _slug(heading):
    """GitHub's anchor of a heading: its text lower-cased, punctuation and symbols dropped,
    spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = text.replace("`", "").strip().lower()
    kept = (c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return "".join(kept).replace(" ", "-")


def anchors(path):
    seen = {}
    out = set()
    for line in _FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page):
    """(target, why) for each relative link of ``page`` that does not resolve."""
    text = _prose(page.read_text(encoding="utf-8"))
    targets = _INLINE.findall(text) + _REFERENCE.findall(text)
    bad = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append((target, "no such file"))
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            bad.append((target, f"no heading with anchor #{fragment} in {dest.name}"))
    return bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_the_check_sees_a_broken_link(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: twice\n\n## A `code` heading: twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n[ok](other.md#other-page) [ok](other.md#a-code-heading-twice-1) [ok](#title)\n"
        "[web](https://example.org/x) `[not a link](nowhere.md)`\n\n"
        "```\n[not a link either](nowhere.md)\n```\n\n"
        "[gone](missing.md) [bad anchor](other.md#nothing) ![img](pic.png)\n\n[ref]: #no-such-heading\n"
    )
    assert broken_links(page) == [
        ("missing.md", "no such file"),
        ("other.md#nothing", "no heading with anchor #nothing in other.md"),
        ("pic.png", "no such file"),
        ("#no-such-heading", "no heading with anchor #no-such-heading in page.md"),
    ]


# A repository file named in a code span (`daskgmm/io/files.py`, `scripts/demo`), and a dotted
# name of the package (`daskgmm.engine.cluster.STALL_SECONDS`): both go stale when code moves.
_CODE_PATH = re.compile(r"`((?:daskgmm|scripts|tests|configs|docs)/[A-Za-z0-9_./-]+\.(?:py|cpp|yaml|json|md|png))`")
# (a dotted name followed by "-" is a Dask config key, `daskgmm.hung-task.timeout`, not a Python name)
_DOTTED = re.compile(r"`(daskgmm(?:\.[A-Za-z_][A-Za-z0-9_]*)+)(?![A-Za-z0-9_<-])")
#: dotted names in the docs that are not Python objects
NOT_PYTHON = {"daskgmm.n_features"}  # the sparse Parquet files' metadata key


def _resolves(name):
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def stale_names(page):
    text = page.read_text(encoding="utf-8")
    bad = [p for p in _CODE_PATH.findall(text) if not (ROOT / p).exists()]
    bad += [n for n in _DOTTED.findall(text) if n not in NOT_PYTHON and not _resolves(n)]
    return sorted(set(bad))


@pytest.mark.parametrize("page", [*PAGES, *sorted((ROOT / "configs").glob("*.yaml"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_files_and_names_in_code_spans_exist(page):
    assert stale_names(page) == []


def test_the_name_check_sees_stale_names(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`daskgmm/io/files.py` `daskgmm/fitting_gone.py` `daskgmm.io.files.DataError` "
                    "`daskgmm.io.files.Gone` `daskgmm.kernels._core_<variant>` `daskgmm.n_features` "
                    "`daskgmm.hung-task.timeout`\n")
    assert stale_names(page) == ["daskgmm.io.files.Gone", "daskgmm/fitting_gone.py"]
