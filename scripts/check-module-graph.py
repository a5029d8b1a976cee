#!/usr/bin/env python3
"""Fail on any circle between the module files of a crate.

Rule: dependencies inside a crate point one way too -- the graph of references
between a crate's module files (`use crate::...`, `crate::a::b` in expressions and
types, `super::...`, `self::x`, `use child::...`/`child::x` of a child module) is
acyclic. Circles between files are how a crate quietly turns into one big module:
nothing can be moved into its own crate, tested alone or read in isolation any more.
`cargo` can't see them (it only forbids circles between crates), so this checks.

What it does, for every workspace member (the `members` globs of the root
Cargo.toml, minus `exclude`):

* Nodes are the module FILES under src/: src/lib.rs (or src/main.rs) is `crate`,
  src/a.rs and src/a/mod.rs are `a`, src/a/b.rs is `a::b`. Files are found by their
  place on disk, not by following `mod` declarations, so a file that is on disk but
  not (yet) declared is still checked. Each src/bin/NAME.rs (a single file) and
  src/bin/NAME/main.rs (with the files under src/bin/NAME/) is a separate crate root
  with a graph of its own; when src/lib.rs and src/main.rs both exist, the files
  main.rs declares with `mod x;` belong to the binary, the rest to the library.
* Comments, string, byte-string, raw-string and char literals are blanked out
  first, so doc text and strings never create edges.
* Edges come from `use` trees (grouped ones too: `use crate::{a, b::{c, d}}`) and
  from paths in code. A path is resolved from the module it is written in (inline
  `mod x { ... }` blocks are tracked, so `super::` inside them means what rustc
  thinks): `crate::` is absolute; `self::` and `super::` are relative; a path whose
  first segment is a child module of the current module (or a name a `use` bound to
  a module of this crate) is relative too; anything else is another crate and is
  ignored. The path then lands on the deepest module FILE along it:
  `crate::rtmp::amf0::Amf0Value` is `rtmp::amf0` if that file exists, else `rtmp`.
  Paths in `pub(in ...)` and `mod x;` declarations are not edges; self edges are
  dropped.
* Test code is a leaf: modules named `tests` (inline or files, e.g. src/x/tests.rs
  is `x::tests`), files under a `tests/` directory of src, and modules declared
  under `#[cfg(test)]` may depend on anything (their `use super::*` is not a circle)
  and are left out of the circle search.
* With `--strict`, as the architecture review's check does, two more kinds of
  reference count: intra-doc links (`[`crate::a::B`]`, `[text](super::x)`,
  `[name]: self::y` in `///` and `//!` comments, outside code blocks, resolved from
  the module the comment is in like a path in code), and test code, whose modules
  then are nodes like any other, an inline `mod tests { ... }` of its own beside its
  file (`x::tests`): a test module of `b` that uses `a` while `a` uses `b` is no
  circle, but `a` -> `b::tests` -> `a` is.

Circles are the strongly connected components with more than one module. For
each, the script prints the modules, one shortest circle through them, and for
every edge inside it one `file:line` that creates it.

Exit status: 0 and a one-line summary when there is no circle, 1 when there is
one, 2 on usage errors.

    scripts/check-module-graph.py                  # whole workspace
    scripts/check-module-graph.py --crate media    # one crate (package name, dir name or path)
    scripts/check-module-graph.py --crate edge --dot | dot -Tsvg > edge.svg
    scripts/check-module-graph.py --strict         # doc links and test code count too
    scripts/check-module-graph.py --root /some/other/workspace

Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import bisect
import glob
import os
import re
import sys
import tomllib
from collections import deque
from dataclasses import dataclass, field

Mod = tuple[str, ...]  # module path below `crate`; () is the crate root

# ---------------------------------------------------------------------------
# Lexing: blank out comments and literals, then split into tokens.

_RAW_STR = re.compile(r'(?:b|c)?r(#*)"')
_PLAIN_STR = re.compile(r'(?:b|c)?"')
_CHAR = re.compile(r"b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]{1,6}\}|.)|[^\\'\n])'")
_TOKEN = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<id>r#[A-Za-z_][A-Za-z0-9_]*|[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<cc>::)"
    r'|(?P<str>"")'
    r"|(?P<num>[0-9][0-9A-Za-z_]*)"
    r"|(?P<p>.)",
    re.S,
)


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _newlines(text: str) -> str:
    return "\n" * text.count("\n")


def strip_code(src: str) -> str:
    """Replace comments with whitespace and every literal with `""`, keeping line numbers."""
    out: list[str] = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        prev = src[i - 1] if i else " "
        if c == "/" and src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j == -1 else j
            out.append(" ")
            i = j
            continue
        if c == "/" and src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(" " + _newlines(src[i:j]) + " ")
            i = j
            continue
        if c in "bcr" and not _is_ident_char(prev):
            m = _RAW_STR.match(src, i)
            if m:
                end = src.find('"' + m.group(1), m.end())
                end = n if end == -1 else end + 1 + len(m.group(1))
                out.append(' ""' + _newlines(src[i:end]) + " ")
                i = end
                continue
        if c == '"' or (c in "bc" and not _is_ident_char(prev) and _PLAIN_STR.match(src, i)):
            j = src.index('"', i) + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(' ""' + _newlines(src[i:j]) + " ")
            i = j
            continue
        if c in "'b" and not _is_ident_char(prev):
            m = _CHAR.match(src, i)
            if m:
                out.append(' "" ')
                i = m.end()
                continue
        out.append(c)
        i += 1
    return "".join(out)


@dataclass
class Tok:
    kind: str  # id, cc, str, num, p
    text: str
    line: int


def tokenize(src: str) -> list[Tok]:
    code = strip_code(src)
    starts = [0] + [m.end() for m in re.finditer("\n", code)]
    toks = []
    for m in _TOKEN.finditer(code):
        kind = m.lastgroup
        if kind == "ws":
            continue
        toks.append(Tok(kind, m.group(), bisect.bisect_right(starts, m.start())))
    return toks


# ---------------------------------------------------------------------------
# Crates, targets and their module files.


@dataclass
class Target:
    package: str  # package name, e.g. streamcdn-media
    member: str  # member dir relative to root, e.g. crates/media
    name: str  # "lib"; "main" (src/main.rs, no lib); "bin" (src/main.rs next to a lib); "bin NAME"
    files: dict[Mod, str] = field(default_factory=dict)  # module -> path relative to root
    test_mods: set[Mod] = field(default_factory=set)
    # inline test modules, nodes of their own with --strict
    inline_tests: set[Mod] = field(default_factory=set)
    # (from, to) -> list of (file, line, in_test_code)
    edges: dict[tuple[Mod, Mod], list[tuple[str, int, bool]]] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return self.member if self.name in ("lib", "main") else f"{self.member} ({self.name})"

    @property
    def label(self) -> str:
        return self.package if self.name in ("lib", "main") else f"{self.package} ({self.name})"


def mod_name(m: Mod) -> str:
    return "::".join(m) if m else "crate"


def is_test_mod(t: Target, m: Mod) -> bool:
    return "tests" in m or any(m[: k + 1] in t.test_mods for k in range(len(m)))


def workspace_members(root: str) -> list[str]:
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        manifest = tomllib.load(f)
    ws = manifest.get("workspace", {})
    excluded = {os.path.normpath(e) for e in ws.get("exclude", [])}
    members: list[str] = []
    if "package" in manifest:
        members.append(".")
    for pattern in ws.get("members", []):
        for d in sorted(glob.glob(os.path.join(root, pattern))):
            rel = os.path.normpath(os.path.relpath(d, root))
            if rel in excluded or rel in members:
                continue
            if os.path.isfile(os.path.join(d, "Cargo.toml")):
                members.append(rel)
    return members


def package_name(root: str, member: str) -> str:
    try:
        with open(os.path.join(root, member, "Cargo.toml"), "rb") as f:
            return tomllib.load(f).get("package", {}).get("name", os.path.basename(member))
    except (OSError, tomllib.TOMLDecodeError):
        return os.path.basename(os.path.abspath(os.path.join(root, member)))


def layout_modules(src_dir: str, root_file: str, skip: set[str]) -> dict[Mod, str]:
    """Module path -> absolute file for every .rs file under src_dir, by its place on disk.

    `skip` holds directories and files (other crate roots) that are not modules of this one.
    """
    mods: dict[Mod, str] = {(): root_file}
    for dirpath, dirnames, filenames in os.walk(src_dir):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in skip)
        for fname in sorted(filenames):
            path = os.path.join(dirpath, fname)
            if not fname.endswith(".rs") or path == root_file or path in skip:
                continue
            parts = os.path.relpath(path, src_dir)[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts.pop()
            if not parts or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
                continue
            # src/a.rs is seen before src/a/mod.rs and wins (having both is a rustc error)
            mods.setdefault(tuple(parts), path)
    return mods


def top_level_file_mods(path: str) -> set[str]:
    """Names of `mod x;` declared at the top of a root file."""
    try:
        toks = tokenize(read(path))
    except OSError:
        return set()
    names, depth = set(), 0
    for i, t in enumerate(toks):
        if t.text == "{":
            depth += 1
        elif t.text == "}":
            depth -= 1
        elif (
            depth == 0
            and t.text == "mod"
            and i + 2 < len(toks)
            and toks[i + 1].kind == "id"
            and toks[i + 2].text == ";"
        ):
            names.add(toks[i + 1].text)
    return names


def targets_of(root: str, member: str) -> list[Target]:
    pkg = package_name(root, member)
    src = os.path.join(root, member, "src")
    lib, main, bindir = (os.path.join(src, f) for f in ("lib.rs", "main.rs", "bin"))
    rel = lambda p: os.path.relpath(p, root)  # noqa: E731
    out: list[Target] = []
    bin_mods: dict[Mod, str] = {}
    if os.path.isfile(main):
        all_mods = layout_modules(src, main, {bindir, lib})
        declared = top_level_file_mods(main) if os.path.isfile(lib) else None
        bin_mods = {
            m: p for m, p in all_mods.items() if declared is None or m == () or m[0] in declared
        }
        name = "bin" if os.path.isfile(lib) else "main"
        out.append(Target(pkg, member, name, {m: rel(p) for m, p in bin_mods.items()}))
    if os.path.isfile(lib):
        mods = layout_modules(src, lib, {bindir, main})
        claimed = {p for m, p in bin_mods.items() if m}
        out.insert(0, Target(pkg, member, "lib", {m: rel(p) for m, p in mods.items() if p not in claimed}))
    if os.path.isdir(bindir):
        for entry in sorted(os.listdir(bindir)):
            path = os.path.join(bindir, entry)
            if entry.endswith(".rs") and os.path.isfile(path):
                out.append(Target(pkg, member, f"bin {entry[:-3]}", {(): rel(path)}))
            elif os.path.isfile(os.path.join(path, "main.rs")):
                mods = layout_modules(path, os.path.join(path, "main.rs"), set())
                out.append(Target(pkg, member, f"bin {entry}", {m: rel(p) for m, p in mods.items()}))
    return out


def read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


# ---------------------------------------------------------------------------
# Scanning one file for references.

_DOC_LINE = re.compile(r"\s*//[/!](?!/)(.*)$")
# `[text](dest)`, `[text][dest]`, `[dest]: ...` and `[dest]`, the destination a path
_DOC_LINK = re.compile(
    r"\[(?P<text>[^\[\]]*)\](?:\((?P<inline>[^()\s]*)\)|\[(?P<ref>[^\[\]]*)\]|(?P<def>:))?"
)
_DOC_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")


def _doc_link_paths(body: str) -> list[list[str]]:
    """The paths intra-doc links on one doc line point at (rustdoc's forms)."""
    out = []
    for m in _DOC_LINK.finditer(body):
        if m.group("inline") is not None:
            dest = m.group("inline")
        elif m.group("ref"):
            dest = m.group("ref")
        else:
            dest = m.group("text")
        if m.group("def") and m.group("text"):
            # `[name]: path` defines a link: its destination follows
            rest = body[m.end():].strip().split()
            dest = rest[0] if rest else ""
        dest = dest.strip().strip("`")
        dest = re.sub(r"^(?:struct|enum|union|trait|type|mod|module|fn|method|macro|const|static|field|variant|value|prim|primitive|derive|tymethod)@", "", dest)
        dest = re.sub(r"(?:\(\)|!)$", "", dest)
        if _DOC_PATH.fullmatch(dest):
            out.append(dest.split("::"))
    return out


@dataclass
class Scope:
    mod: Mod
    test: bool
    depth: int


def _cfg_test_before(toks: list[Tok], i: int) -> bool:
    """Is the item whose keyword is at toks[i] under #[cfg(test)] (skipping visibility)?"""
    j = i - 1
    if j >= 0 and toks[j].text == ")":  # pub(crate), pub(in a::b)
        while j >= 0 and toks[j].text != "(":
            j -= 1
        j -= 1
    if j >= 0 and toks[j].text == "pub":
        j -= 1
    while j >= 0 and toks[j].text == "]":
        level, k = 0, j
        while k >= 0:
            if toks[k].text == "]":
                level += 1
            elif toks[k].text == "[":
                level -= 1
                if level == 0:
                    break
            k -= 1
        words = [t.text for t in toks[k + 1 : j]]
        if words[:1] == ["cfg"] and "test" in words and "not" not in words:
            return True
        j = k - 1
        if j >= 0 and toks[j].text == "!":
            j -= 1
        if j >= 0 and toks[j].text == "#":
            j -= 1
        else:
            break
    return False


def _parse_use_tree(toks: list[Tok], i: int, prefix: list[str], leaves: list) -> int:
    """Parse one use tree at toks[i]; append (segments, alias, line) leaves; return next index."""
    segs = list(prefix)
    line = toks[i].line if i < len(toks) else 0
    while i < len(toks):
        t = toks[i]
        if t.text == "{":
            i += 1
            while i < len(toks) and toks[i].text != "}":
                if toks[i].text == ",":
                    i += 1
                    continue
                before = i
                i = _parse_use_tree(toks, i, segs, leaves)
                if i == before:  # not a tree: skip the token
                    i += 1
            return i + 1
        if t.text == "$" and i + 1 < len(toks) and toks[i + 1].text == "crate":
            i += 1
            continue
        if t.kind == "id" or t.text == "*":
            segs.append(t.text)
            line = t.line
            i += 1
            if i < len(toks) and toks[i].kind == "cc":
                i += 1
                continue
            alias = None
            if i + 1 < len(toks) and toks[i].text == "as":
                alias = toks[i + 1].text
                i += 2
            leaves.append((segs, alias, line))
            return i
        if t.kind == "cc" and not segs:  # `use ::ext::...`
            segs.append("::")
            i += 1
            continue
        return i
    return i


class FileScan:
    """References found in one module file."""

    def __init__(self, target: Target, mod: Mod, path: str, root: str):
        self.t, self.mod, self.path = target, mod, path
        self.abs = os.path.join(root, path)
        src = read(self.abs)
        self.src = src
        self.lines = src.splitlines()
        self.toks = tokenize(src)
        self.scopes: list[Scope] = []
        self.scope_of: list[int] = []
        self.inline: set[Mod] = set()
        self.aliases: dict[tuple[Mod, str], Mod] = {}
        # (target module path, line, in test code, module the reference is written in)
        self.refs: list[tuple[Mod, int, bool, Mod]] = []

    # which scope each token is in; inline modules; cfg(test) file modules
    def scan_scopes(self) -> None:
        toks = self.toks
        self.scopes = [Scope(self.mod, is_test_mod(self.t, self.mod), 0)]
        stack, depth, pending = [0], 0, None
        for i, tok in enumerate(toks):
            self.scope_of.append(stack[-1])
            if tok.text == "{":
                depth += 1
                if pending is not None:
                    name, test = pending
                    parent = self.scopes[stack[-1]]
                    m = parent.mod + (name,)
                    self.scopes.append(Scope(m, parent.test or test or name == "tests", depth))
                    self.inline.add(m)
                    stack.append(len(self.scopes) - 1)
                    pending = None
            elif tok.text == "}":
                depth -= 1
                while len(stack) > 1 and self.scopes[stack[-1]].depth > depth:
                    stack.pop()
            elif tok.text == ";":
                pending = None
            elif tok.text == "mod" and i + 2 < len(toks) and toks[i + 1].kind == "id":
                name, after = toks[i + 1].text, toks[i + 2].text
                if after == "{":
                    pending = (name, _cfg_test_before(toks, i))
                elif after == ";" and _cfg_test_before(toks, i):
                    self.t.test_mods.add(self.scopes[stack[-1]].mod + (name,))

    def children(self, m: Mod) -> set[str]:
        kids = {k[-1] for k in self.t.files if len(k) == len(m) + 1 and k[:-1] == m}
        kids |= {k[-1] for k in self.inline if len(k) == len(m) + 1 and k[:-1] == m}
        return kids

    def absolute(self, segs: list[str], scope: Mod) -> Mod | None:
        """Absolute module path of a path written in `scope`, or None if it is another crate's."""
        if not segs or segs[0] == "::":
            return None
        first = segs[0]
        if first == "crate":
            return tuple(segs[1:])
        if first == "self":
            return scope + tuple(segs[1:])
        if first == "super":
            base, k = scope, 0
            while k < len(segs) and segs[k] == "super":
                if not base:
                    return None
                base, k = base[:-1], k + 1
            return base + tuple(segs[k:])
        if first in self.children(scope):
            return scope + tuple(segs)
        if (scope, first) in self.aliases:
            return self.aliases[(scope, first)] + tuple(segs[1:])
        return None

    def is_module(self, m: Mod) -> bool:
        return m in self.t.files or m in self.inline

    def scan_refs(self) -> None:
        toks = self.toks
        use_spans: list[tuple[int, int]] = []
        uses: list[tuple[int, list]] = []
        for i, tok in enumerate(toks):
            if tok.text == "use" and i + 1 < len(toks) and toks[i + 1].text != "<":
                leaves: list = []
                end = _parse_use_tree(toks, i + 1, [], leaves)
                use_spans.append((i, max(end, i + 1)))
                uses.append((self.scope_of[i], leaves))
        # first the names `use` binds to modules of this crate (uniform paths)
        for _ in range(2):  # twice, for `use crate::a; use a::b;`
            for sidx, leaves in uses:
                scope = self.scopes[sidx].mod
                for segs, alias, _line in leaves:
                    s = [x for x in segs if x != "*"]
                    if s and s[-1] == "self":
                        s.pop()
                    m = self.absolute(s, scope) if s else None
                    name = alias or (s[-1] if s else None)
                    if m is not None and name and name != "_" and segs[-1] != "*" and self.is_module(m):
                        self.aliases[(scope, name)] = m
        for sidx, leaves in uses:
            scope = self.scopes[sidx]
            for segs, _alias, line in leaves:
                s = [x for x in segs if x != "*"]
                if s and s[-1] == "self":
                    s.pop()
                m = self.absolute(s, scope.mod)
                if m is not None:
                    self.refs.append((m, line, scope.test, scope.mod))
        # then paths in code
        skip = set()
        for a, b in use_spans:
            skip.update(range(a, b))
        i = 0
        while i < len(toks):
            tok = toks[i]
            if (
                i in skip
                or tok.kind != "id"
                or i + 2 >= len(toks)
                or toks[i + 1].kind != "cc"
                or toks[i + 2].kind != "id"
                or (i > 0 and toks[i - 1].kind == "cc")
            ):
                i += 1
                continue
            if i > 0 and toks[i - 1].text == "in":  # pub(in crate::a)
                i += 1
                continue
            segs, j = [tok.text], i + 1
            while j + 1 < len(toks) and toks[j].kind == "cc" and toks[j + 1].kind == "id":
                segs.append(toks[j + 1].text)
                j += 2
            scope = self.scopes[self.scope_of[i]]
            m = self.absolute(segs, scope.mod)
            if m is not None:
                self.refs.append((m, toks[j - 1].line, scope.test, scope.mod))
            i = j

    def scan_doc_links(self) -> None:
        """Intra-doc links in `///` and `//!` comments (outside code blocks), as refs."""
        lines_of_tokens = [t.line for t in self.toks]
        fenced = False
        for number, text in enumerate(self.lines, start=1):
            m = _DOC_LINE.match(text)
            if not m:
                fenced = False if not text.strip() else fenced
                continue
            body = m.group(1)
            if body.lstrip().startswith(("```", "~~~")):
                fenced = not fenced
                continue
            if fenced:
                continue
            paths = [p for p in _doc_link_paths(body)]
            if not paths:
                continue
            # the module the comment is in: that of the next token (the documented
            # item, or the module body an inner `//!` comment opens)
            k = bisect.bisect_left(lines_of_tokens, number)
            if k >= len(self.toks):
                k = len(self.toks) - 1
            scope = self.scopes[self.scope_of[k]] if self.toks else self.scopes[0]
            for segs in paths:
                target = self.absolute(segs, scope.mod)
                if target is not None:
                    self.refs.append((target, number, scope.test, scope.mod))

    def resolve(self, m: Mod) -> Mod:
        """The deepest module FILE along an absolute path."""
        for k in range(len(m), -1, -1):
            if m[:k] in self.t.files:
                return m[:k]
        return ()

    def test_node(self, scope: Mod) -> Mod:
        """The inline test module (outermost) `scope` is in, else this file's module."""
        for k in range(len(self.mod) + 1, len(scope) + 1):
            inner = scope[:k]
            if inner in self.inline and any(x.mod == inner and x.test for x in self.scopes):
                return inner
        return self.mod


def build(target: Target, root: str, strict: bool = False) -> list[str]:
    """Scan every file of a target and fill in its edges. Returns warnings."""
    warnings = []
    scans = []
    # scopes first: they find `#[cfg(test)] mod x;`, which makes x a test module
    for m, path in sorted(target.files.items()):
        try:
            s = FileScan(target, m, path, root)
        except OSError as e:
            warnings.append(f"warning: skipped {path}: {e.strerror}")
            continue
        s.scan_scopes()
        scans.append(s)
    for s in scans:
        s.scopes[0].test = is_test_mod(target, s.mod)
        s.scan_refs()
        if strict:
            s.scan_doc_links()
        for ref, line, in_test, scope in s.refs:
            src = s.test_node(scope) if strict else s.mod
            if src != s.mod:
                target.inline_tests.add(src)
            dst = s.resolve(ref)
            if dst == src:
                continue
            in_test = in_test or is_test_mod(target, s.mod)
            target.edges.setdefault((src, dst), []).append((s.path, line, in_test))
    return warnings


# ---------------------------------------------------------------------------
# Circles.


def dependency_edges(t: Target, strict: bool = False) -> dict[Mod, set[Mod]]:
    """Edges that count: not from test code, not between test modules (with `strict`,
    every edge)."""
    nodes = set(t.files) | (t.inline_tests if strict else set())
    graph: dict[Mod, set[Mod]] = {m: set() for m in nodes if strict or not is_test_mod(t, m)}
    for (a, b), sites in t.edges.items():
        if a in graph and b in graph and any(strict or not in_test for _f, _l, in_test in sites):
            graph[a].add(b)
    return graph


def strongly_connected(graph: dict[Mod, set[Mod]]) -> list[list[Mod]]:
    """Tarjan's algorithm, iterative; components with more than one node."""
    index: dict[Mod, int] = {}
    low: dict[Mod, int] = {}
    on_stack: set[Mod] = set()
    stack: list[Mod] = []
    out: list[list[Mod]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return sorted(out)


def shortest_circle(graph: dict[Mod, set[Mod]], comp: list[Mod]) -> list[Mod]:
    members = set(comp)
    start = comp[0]
    prev: dict[Mod, Mod] = {}
    queue = deque([start])
    seen = {start}
    while queue:
        node = queue.popleft()
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if nxt not in seen:
                seen.add(nxt)
                prev[nxt] = node
                queue.append(nxt)
    return comp


def example(root: str, sites: list[tuple[str, int, bool]], strict: bool = False) -> str:
    path, line, _ = min((s for s in sites if strict or not s[2]), key=lambda s: (s[0], s[1]))
    try:
        text = read(os.path.join(root, path)).splitlines()[line - 1].strip()
    except (OSError, IndexError):
        text = ""
    if len(text) > 90:
        text = text[:87] + "..."
    return f"{path}:{line}  {text}"


def report(t: Target, root: str, out, strict: bool = False) -> int:
    graph = dependency_edges(t, strict)
    comps = strongly_connected(graph)
    for comp in comps:
        names = ", ".join(mod_name(m) for m in comp)
        print(f"{t.where}: circle between {len(comp)} modules: {names}", file=out)
        print("  e.g. " + " -> ".join(mod_name(m) for m in shortest_circle(graph, comp)), file=out)
        members = set(comp)
        for a in comp:
            for b in sorted(graph[a] & members):
                print(f"  {mod_name(a)} -> {mod_name(b)}: {example(root, t.edges[(a, b)], strict)}", file=out)
    return len(comps)


def dot(t: Target, strict: bool = False) -> str:
    graph = dependency_edges(t, strict)
    in_circle = {m for comp in strongly_connected(graph) for m in comp}
    q = lambda m: '"' + mod_name(m) + '"'  # noqa: E731
    out = [f'digraph "{t.label}" {{', "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
    for m in sorted(t.files):
        attrs = []
        if is_test_mod(t, m):
            attrs.append("style=dashed")
        if m in in_circle:
            attrs.append("color=red")
        out.append(f"  {q(m)}" + (f" [{', '.join(attrs)}]" if attrs else "") + ";")
    for (a, b), sites in sorted(t.edges.items()):
        counts = b in graph.get(a, set())
        attrs = [f'tooltip="{sites[0][0]}:{sites[0][1]}"']
        if not counts:
            attrs.append("style=dashed, color=gray")
        elif a in in_circle and b in in_circle:
            attrs.append("color=red")
        out.append(f"  {q(a)} -> {q(b)} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    default_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(
        description="Fail on circles between the module files of each workspace crate.",
    )
    ap.add_argument("--root", default=default_root, help="workspace root (default: %(default)s)")
    ap.add_argument("--crate", help="check one crate: package name, member dir name or path")
    ap.add_argument("--dot", action="store_true", help="print the module graph(s) in Graphviz form")
    ap.add_argument(
        "--strict",
        action="store_true",
        help="count intra-doc links and test code too (the architecture review's check)",
    )
    args = ap.parse_args(argv)

    root = os.path.abspath(args.root)
    try:
        members = workspace_members(root)
    except (OSError, tomllib.TOMLDecodeError) as e:
        print(f"check-module-graph: cannot read {root}/Cargo.toml: {e}", file=sys.stderr)
        return 2
    if args.crate:
        want = os.path.normpath(args.crate)
        members = [
            m
            for m in members
            if want in (m, os.path.basename(os.path.abspath(os.path.join(root, m))), package_name(root, m))
        ]
        if not members:
            known = ", ".join(package_name(root, m) for m in workspace_members(root))
            print(f"check-module-graph: no crate {args.crate!r} (crates: {known})", file=sys.stderr)
            return 2

    targets: list[Target] = []
    for member in members:
        for t in targets_of(root, member):
            for w in build(t, root, args.strict):
                print(w, file=sys.stderr)
            targets.append(t)

    # with --dot, stdout is the graph only and the circles go to stderr
    out = sys.stderr if args.dot else sys.stdout
    if args.dot:
        print("\n\n".join(dot(t, args.strict) for t in targets))
    circles, bad = 0, []
    for t in targets:
        found = report(t, root, out, args.strict)
        circles += found
        if found:
            bad.append(t.where)
    modules = sum(len(t.files) for t in targets)
    crates = len(members)
    if circles:
        print(
            f"module graph: {crates} crates, {modules} modules, {circles} circle(s) in {', '.join(bad)}",
            file=out,
        )
        return 1
    if not args.dot:
        print(f"module graph: {crates} crates, {modules} modules, no circles")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # `... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
