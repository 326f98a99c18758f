#!/usr/bin/env bash
# Build the course book (Jupyter Book 1.x) into book/_build/html.
#
#   bash scripts/build_book.sh        (what `make book` runs, with .venv/bin on PATH)
#
# Idempotent: the widget loaders are fetched from the npm registry only when missing,
# and notebooks are re-executed only when their code changed (execute_notebooks: cache),
# so an unchanged rebuild takes seconds.
#
# The site works offline. MathJax comes from the sphinx-mathjax-offline package; the
# ipywidgets loaders (require.js and @jupyter-widgets/html-manager's embed-amd.js with
# its fonts) come from npm into book/_static_local/widgets/, which is git-ignored and
# served as _static/widgets/ (see nb_ipywidgets_js in book/_config.yml).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# Run from a plain shell too: fall back to the repository's virtual environment.
if ! command -v jupyter-book >/dev/null 2>&1 && [ -x "$REPO/.venv/bin/jupyter-book" ]; then
    export PATH="$REPO/.venv/bin:$PATH"
fi
# The book reads the course's data files through llmcourse.data.fetch. Where the
# project's shared data folder sits beside the checkout (developers, CI), use it;
# otherwise fetch downloads each file once into its cache and verifies its hash.
if [ -z "${LLMCOURSE_DATA_DIR:-}" ] && [ -d "$REPO/../shared/data" ]; then
    export LLMCOURSE_DATA_DIR="$(cd "$REPO/../shared/data" && pwd)"
fi

command -v jupyter-book >/dev/null 2>&1 || {
    echo "build_book.sh: jupyter-book not found; run 'make install' first" >&2; exit 1; }

# Exact versions and the registry's sha512 integrity for each. html-manager 1.x is the
# line that ipywidgets 8.1 embeds (ipywidgets' __html_manager_version__ is "^1.0.1");
# 1.0.15 is the newest 1.x and bundles @jupyter-widgets/controls 5 (widget protocol 2).
HTML_MANAGER_VERSION=1.0.15
HTML_MANAGER_INTEGRITY="sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA=="
REQUIREJS_VERSION=2.3.8
REQUIREJS_INTEGRITY="sha512-7/cTSLOdYkNBNJcDMWf+luFvMriVm7eYxp4BcFCsAX0wF421Vyce5SXP17c+Jd5otXKGNehIonFlyQXSowL6Mw=="

# The Korean web font (book/_css/course.css): Noto Sans KR from Fontsource, regular and
# bold, woff2 only (every browser the site supports reads it).
NOTO_KR_VERSION=5.3.0
NOTO_KR_INTEGRITY="sha512-/JnpTjaCOXW7xUoqOyCVYSr05VOkDy5Yla9O+WAEiS7u+yYLsmHoqj6v1W0bf91G8G3XA2+NnRS3CX2Tf/FVZg=="

WIDGETS_DIR="$REPO/book/_static_local/widgets"
STAMP="$WIDGETS_DIR/VERSIONS"
WANT_STAMP="@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION requirejs@$REQUIREJS_VERSION"

# Jupyter Book adds every .js/.css under *all* html_static_path folders to every page
# once a book/_static folder exists; require.js on every page breaks other scripts.
if [ -e "$REPO/book/_static" ]; then
    echo "build_book.sh: book/_static exists. Jupyter Book would then inject the widget" >&2
    echo "  loaders into every page. Put custom CSS in another folder (e.g. book/_css)," >&2
    echo "  add it to sphinx.config.html_static_path and list it in html_css_files." >&2
    exit 1
fi

check_ipywidgets() {
    local want
    want="$(python -c 'from ipywidgets._version import __html_manager_version__ as v; print(v)')"
    case "$want" in
        "^1."*|"~1."*|"1."*) ;;
        *) echo "build_book.sh: ipywidgets wants html-manager $want, but $HTML_MANAGER_VERSION is pinned;" \
                "update HTML_MANAGER_VERSION" >&2; exit 1 ;;
    esac
}

# npm pack PACKAGE@VERSION INTEGRITY DIR: download the tarball into DIR, check its hash.
npm_pack() {
    local spec="$1" integrity="$2" dir="$3" got
    got="$(cd "$dir" && npm pack "$spec" --json --loglevel=error \
        | python -c 'import json,sys; d=json.load(sys.stdin)[0]; print(d["integrity"], d["filename"])')"
    if [ "${got% *}" != "$integrity" ]; then
        echo "build_book.sh: $spec integrity mismatch: got ${got% *}, want $integrity" >&2
        exit 1
    fi
    echo "$dir/${got#* }"
}

fetch_widget_js() {
    local tmp tgz
    check_ipywidgets
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    echo "Fetching widget loaders from the npm registry: $WANT_STAMP"
    tgz="$(npm_pack "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" "$HTML_MANAGER_INTEGRITY" "$tmp")"
    mkdir -p "$tmp/hm" && tar -xzf "$tgz" -C "$tmp/hm"
    tgz="$(npm_pack "requirejs@$REQUIREJS_VERSION" "$REQUIREJS_INTEGRITY" "$tmp")"
    mkdir -p "$tmp/rj" && tar -xzf "$tgz" -C "$tmp/rj"

    # Assemble next to the target and swap it in, so an interrupted fetch never
    # leaves a half-filled folder that the stamp check would accept.
    local new="$WIDGETS_DIR.new"
    rm -rf "$new" && mkdir -p "$new"
    # embed-amd.js plus the Font Awesome fonts it references by hashed file name;
    # embed.js (the non-AMD build) and the source maps are not needed.
    cp "$tmp/hm/package/dist/embed-amd.js" "$new/"
    cp "$tmp/hm/package/dist/"*.{woff2,woff,ttf,eot,svg} "$new/"
    cp "$tmp/hm/package/LICENSE" "$new/LICENSE.html-manager" 2>/dev/null || true
    cp "$tmp/rj/package/require.js" "$new/"
    echo "$WANT_STAMP" > "$new/VERSIONS"
    rm -rf "$WIDGETS_DIR" && mv "$new" "$WIDGETS_DIR"
}

fetch_korean_font() {
    local tmp tgz new="$FONT_DIR.new"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    echo "Fetching the Korean web font from the npm registry: $FONT_STAMP"
    tgz="$(npm_pack "@fontsource/noto-sans-kr@$NOTO_KR_VERSION" "$NOTO_KR_INTEGRITY" "$tmp")"
    mkdir -p "$tmp/kr" && tar -xzf "$tgz" -C "$tmp/kr"
    rm -rf "$new" && mkdir -p "$new/files"
    for weight in 400 700; do
        cp "$tmp/kr/package/files/"noto-sans-kr-*-"$weight"-normal.woff2 "$new/files/"
        # Keep only the woff2 source of each @font-face (the .woff files are not served).
        sed -E 's/, url\([^)]*\.woff\) format\(.woff.\)//' "$tmp/kr/package/$weight.css" > "$new/$weight.css"
    done
    cp "$tmp/kr/package/LICENSE" "$new/LICENSE" 2>/dev/null || true
    echo "$FONT_STAMP" > "$new/VERSION"
    rm -rf "$FONT_DIR" && mv "$new" "$FONT_DIR"
}

FONT_DIR="$REPO/book/_static_local/fonts/noto-sans-kr"
FONT_STAMP="@fontsource/noto-sans-kr@$NOTO_KR_VERSION"
if [ ! -f "$FONT_DIR/VERSION" ] || [ "$(cat "$FONT_DIR/VERSION")" != "$FONT_STAMP" ]; then
    fetch_korean_font
fi

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT_STAMP" ] \
    || [ ! -f "$WIDGETS_DIR/embed-amd.js" ] || [ ! -f "$WIDGETS_DIR/require.js" ]; then
    fetch_widget_js
fi

# A second copy of the widget fonts at the site root: one of the two webpack runtimes in
# embed-amd.js resolves its @font-face URLs against the page ("@jupyter-widgets/<hash>"),
# not against the require.js path, so some page loads ask for them there.
# html_extra_path (book/_config.yml) copies book/_extra_local/ to the site root.
EXTRA_FONTS="$REPO/book/_extra_local/@jupyter-widgets"
mkdir -p "$EXTRA_FONTS"
cp -f "$WIDGETS_DIR"/*.woff2 "$WIDGETS_DIR"/*.woff "$WIDGETS_DIR"/*.ttf "$WIDGETS_DIR"/*.eot \
    "$WIDGETS_DIR"/*.svg "$EXTRA_FONTS"/

# After a theme upgrade Sphinx would warn (an error under -W) that it overwrites the old
# theme's files in _static: start the site afresh when the theme versions changed (the
# executed notebooks stay cached in book/_build/.jupyter_cache).
THEMES="$(python -c 'from importlib.metadata import version as v; print("sphinx-book-theme", v("sphinx-book-theme"), "pydata-sphinx-theme", v("pydata-sphinx-theme"))')"
THEME_STAMP="$REPO/book/_build/html/.theme-versions"
if [ -d "$REPO/book/_build/html" ] && [ "$(cat "$THEME_STAMP" 2>/dev/null)" != "$THEMES" ]; then
    rm -rf "$REPO/book/_build/html"
fi

# -W: warnings are errors; -n: nitpicky, so broken references are warnings (errors);
# --keep-going: report all of them, not just the first. A cell that raises fails too.
echo "Building the book (jupyter-book build book -W -n --keep-going)"
jupyter-book build book -W -n --keep-going
echo "$THEMES" > "$THEME_STAMP"

echo
echo "Book site: $REPO/book/_build/html/index.html"
