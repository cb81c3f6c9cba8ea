#!/usr/bin/env python3
"""Import cycles between the files of src/: which file's code names which other file's items.

    python3 tools/import_cycles.py              # prints every cycle; exit 1 if there is one
    python3 tools/import_cycles.py --list       # the whole file graph, with the lines behind it
    python3 tools/import_cycles.py --self-test  # proves on planted trees that cycles are found
    python3 tools/import_cycles.py --root DIR   # another checkout (DIR/Cargo.toml, DIR/src)

Exit status: 0 no cycle, 1 cycles (printed), 2 usage or a tree that cannot be read.

Reads every src/**/*.rs with its comments, strings and character literals removed, builds the
module tree from the crate roots (src/lib.rs, src/main.rs, src/bin/*.rs) and their `mod`
declarations, and resolves to files:
- `use` declarations (`crate::`, `super::`, `self::`, a child module, the library's name from a
  binary), groups and renames included;
- paths in code, not only in `use` lines: `crate::rekey::plan::RAW` inline counts;
- a path through a re-export (`pub use child::Item` in mod.rs) is followed to the file that
  defines the item. A re-export is a signpost, not a dependency: it is an import of the file it
  names only when the re-exporting file's own code uses the name too.
A parent declaring `mod child;` does not import the child; a child naming `super::X` imports the
parent's file. A file whose code names an item of another file imports that file. Every strongly
connected component of more than one file is a cycle, printed with the lines that make each of its
edges. Standard library only (Python 3.8+).

Not resolved (no edge, so never a false cycle): paths through glob re-exports whose item is not
found, and macro-generated paths; `$crate::` counts for the file that defines the macro.
"""

import os
import re
import sys
import tempfile

class Unreadable(Exception):
    """The tree cannot be read as a Cargo package: exit 2, not a verdict on cycles."""


KEYWORDS_ITEM = {"fn", "struct", "enum", "const", "static", "type", "trait", "union"}


# --- lexing ------------------------------------------------------------------------------------

class Tok:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind = kind  # "id", "::", or "p" (one punctuation character)
        self.text = text
        self.line = line

    def __repr__(self):
        return f"{self.text}@{self.line}"


def lex(src):
    """Tokens of Rust source, without comments, strings, character literals, lifetimes, numbers."""
    toks = []
    i, n, line = 0, len(src), 1

    def skip_string(j):
        # j is at the opening quote of a (byte) string with escapes; returns the index after it.
        nonlocal line
        j += 1
        while j < n:
            c = src[j]
            if c == "\\":
                if j + 1 < n and src[j + 1] == "\n":
                    line += 1
                j += 2
                continue
            if c == "\n":
                line += 1
            if c == '"':
                return j + 1
            j += 1
        return n

    def skip_raw(j):
        # j is at the `r` of r"..." / r#"..."#; returns the index after it, or None if not raw.
        nonlocal line
        k = j + 1
        hashes = 0
        while k < n and src[k] == "#":
            hashes += 1
            k += 1
        if k >= n or src[k] != '"':
            return None
        end = '"' + "#" * hashes
        e = src.find(end, k + 1)
        e = n if e < 0 else e + len(end)
        line += src.count("\n", j, e)
        return e

    while i < n:
        c = src[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif src.startswith("//", i):
            e = src.find("\n", i)
            i = n if e < 0 else e
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    if src[j] == "\n":
                        line += 1
                    j += 1
            i = j
        elif c == '"':
            i = skip_string(i)
        elif c in "rb" and (src.startswith('b"', i) or src.startswith("br", i) or c == "r"):
            # b"..", br"..", br#".."#, r"..", r#".."#; otherwise an identifier (or r#ident).
            if src.startswith('b"', i):
                i = skip_string(i + 1)
                continue
            j = i + 1 if src.startswith("br", i) else i
            e = skip_raw(j) if src.startswith("r", j) else None
            if e is not None:
                i = e
                continue
            m = re.compile(r"(r#)?[A-Za-z_][A-Za-z0-9_]*").match(src, i)
            word = m.group(0)
            toks.append(Tok("id", word[2:] if word.startswith("r#") else word, line))
            i = m.end()
        elif c == "'":
            # 'a' '\n' '\u{1F600}' b'x' are characters; 'a (no closing quote) is a lifetime.
            if i + 1 < n and src[i + 1] == "\\":
                e = src.find("'", i + 3)
                i = n if e < 0 else e + 1
            elif i + 2 < n and src[i + 2] == "'":
                i += 3
            else:
                i += 1
                m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*").match(src, i)
                if m:
                    i = m.end()
        elif c.isdigit():
            m = re.compile(r"[0-9][0-9A-Za-z_]*(\.[0-9][0-9A-Za-z_]*)?").match(src, i)
            i = m.end()
        elif c.isalpha() or c == "_" or c == "$":
            m = re.compile(r"\$?[A-Za-z_][A-Za-z0-9_]*").match(src, i)
            if m is None:
                i += 1
                continue
            toks.append(Tok("id", m.group(0), line))
            i = m.end()
        elif src.startswith("::", i):
            toks.append(Tok("::", "::", line))
            i += 2
        else:
            toks.append(Tok("p", c, line))
            i += 1
    return toks


# --- parsing one file --------------------------------------------------------------------------

class Binding:
    """`use PATH [as NAME]` in module `mod` (a module path inside the crate)."""

    __slots__ = ("mod", "name", "path", "public", "line", "text")

    def __init__(self, mod, name, path, public, line):
        self.mod, self.name, self.path, self.public, self.line = mod, name, path, public, line
        self.text = "use " + "::".join(path)


class FileInfo:
    def __init__(self, rel, crate, mod):
        self.rel = rel  # path relative to the root, e.g. src/crypto/cipher.rs
        self.crate = crate
        self.mod = mod  # module path of the file, e.g. ("crypto", "cipher")
        self.decls = []  # (module path, child name): `mod child;`
        self.inline = set()  # module paths of inline `mod x { }` blocks
        self.bindings = []  # Binding
        self.paths = []  # (module path, segments, line) in code
        self.items = {}  # module path -> names defined there
        self.code_ids = {}  # identifier -> count outside `use` declarations


def parse_use_tree(toks, i, prefix, out):
    """Parses a use tree at toks[i]; appends (segments, bound name) to out; returns next index."""
    segs = list(prefix)
    start = i
    while i < len(toks):
        t = toks[i]
        if t.kind == "::":
            i += 1
            continue
        if t.kind == "id" and t.text != "as":
            segs.append(t.text)
            i += 1
            continue
        break
    t = toks[i] if i < len(toks) else None
    if t is not None and t.kind == "p" and t.text == "{":
        i += 1
        while i < len(toks) and not (toks[i].kind == "p" and toks[i].text == "}"):
            if toks[i].kind == "p" and toks[i].text == ",":
                i += 1
                continue
            i = parse_use_tree(toks, i, segs, out)
        return i + 1
    if t is not None and t.kind == "p" and t.text == "*":
        out.append((segs, "*"))
        return i + 1
    if t is not None and t.kind == "id" and t.text == "as":
        alias = toks[i + 1].text
        if segs and segs[-1] == "self":
            segs = segs[:-1]
        out.append((segs, alias))
        return i + 2
    if i == start:
        return i + 1  # not a use tree (malformed or unexpected): step over it
    if segs and segs[-1] == "self":
        segs = segs[:-1]
    if segs:
        out.append((segs, segs[-1]))
    return i


def parse_file(info, src):
    toks = lex(src)
    stack = []  # (inline module name, brace depth of its body)
    depth = 0
    i = 0
    while i < len(toks):
        t = toks[i]
        ctx = info.mod + tuple(name for name, _ in stack)
        if t.kind == "p":
            if t.text == "{":
                depth += 1
            elif t.text == "}":
                depth -= 1
                if stack and stack[-1][1] == depth + 1:
                    stack.pop()
            i += 1
            continue
        if t.kind != "id":
            i += 1
            continue
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        at_item_level = depth == (stack[-1][1] if stack else 0)
        if t.text == "mod" and nxt is not None and nxt.kind == "id" and i + 2 < len(toks):
            after = toks[i + 2]
            if after.kind == "p" and after.text == ";":
                info.decls.append((ctx, nxt.text))
                i += 3
                continue
            if after.kind == "p" and after.text == "{":
                info.inline.add(ctx + (nxt.text,))
                depth += 1
                stack.append((nxt.text, depth))
                i += 3
                continue
        if t.text == "use":
            public = i > 0 and (
                toks[i - 1].text == "pub"
                or (toks[i - 1].text == ")" and i >= 3 and "pub" in (toks[i - 3].text, toks[i - 4].text if i >= 4 else ""))
            )
            out = []
            j = parse_use_tree(toks, i + 1, [], out)
            while j < len(toks) and not (toks[j].kind == "p" and toks[j].text == ";"):
                j += 1
            for segs, name in out:
                info.bindings.append(Binding(ctx, name, segs, public, t.line))
            i = j + 1
            continue
        if at_item_level and t.text in KEYWORDS_ITEM and nxt is not None and nxt.kind == "id":
            if not (t.text == "const" and nxt.text in ("fn", "unsafe", "extern")):
                info.items.setdefault(ctx, set()).add(nxt.text)
        if t.text == "macro_rules" and i + 2 < len(toks) and toks[i + 2].kind == "id":
            info.items.setdefault((), set()).add(toks[i + 2].text)
        # A path in code: IDENT (:: IDENT)+, not preceded by `::` (the middle of a path).
        prev = toks[i - 1] if i > 0 else None
        if nxt is not None and nxt.kind == "::" and not (prev is not None and prev.kind == "::"):
            segs = [t.text]
            j = i + 1
            while j + 1 < len(toks) and toks[j].kind == "::" and toks[j + 1].kind == "id":
                segs.append(toks[j + 1].text)
                j += 2
            info.paths.append((ctx, segs, t.line))
            for s in segs:
                info.code_ids[s] = info.code_ids.get(s, 0) + 1
            i = j
            continue
        info.code_ids[t.text] = info.code_ids.get(t.text, 0) + 1
        i += 1


# --- the module tree and name resolution ------------------------------------------------------

def crate_names(root):
    """The library crate's name as other crates of the package spell it."""
    text = ""
    try:
        with open(os.path.join(root, "Cargo.toml"), encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise Unreadable(f"import_cycles: cannot read {root}/Cargo.toml: {e}")
    section, names = None, {}
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith("["):
            section = s.strip("[]").strip()
            continue
        m = re.match(r'name\s*=\s*"([^"]+)"', s)
        if m and section in ("package", "lib") and section not in names:
            names[section] = m.group(1)
    return names.get("lib", names.get("package", "")).replace("-", "_")


class Graph:
    def __init__(self, root):
        self.root = root
        self.lib = crate_names(root)
        self.files = {}  # rel path -> FileInfo
        self.modules = {}  # (crate, module path) -> rel path
        self.orphans = []
        self.edges = {}  # (from, to) -> [(line, text)]
        self._load()
        self._resolve_all()

    def _read(self, rel, crate, mod):
        path = os.path.join(self.root, rel)
        try:
            with open(path, encoding="utf-8") as f:
                src = f.read()
        except OSError as e:
            raise Unreadable(f"import_cycles: cannot read {path}: {e}")
        info = FileInfo(rel, crate, mod)
        parse_file(info, src)
        self.files[rel] = info
        self.modules[(crate, mod)] = rel
        for m in info.inline:
            self.modules[(crate, m)] = rel
        for ctx, child in info.decls:
            self._declare(info, ctx, child)

    def _declare(self, parent, ctx, child):
        # Where `mod child;` inside module ctx of file parent lives (the Rust 2018 rules).
        d = os.path.dirname(parent.rel)
        base = os.path.basename(parent.rel)
        if not (base == "mod.rs" or parent.rel in self.roots):
            d = os.path.join(d, base[:-3])
        inner = ctx[len(parent.mod):]
        d = os.path.join(d, *inner) if inner else d
        for cand in (os.path.join(d, child + ".rs"), os.path.join(d, child, "mod.rs")):
            if os.path.isfile(os.path.join(self.root, cand)):
                self._read(cand, parent.crate, ctx + (child,))
                return
        raise Unreadable(
            f"import_cycles: {parent.rel} declares `mod {child};` but neither "
            f"{os.path.join(d, child + '.rs')} nor {os.path.join(d, child, 'mod.rs')} exists"
        )

    def _load(self):
        src = os.path.join(self.root, "src")
        if not os.path.isdir(src):
            raise Unreadable(f"import_cycles: {src} is not a directory (use --root)")
        self.roots = []
        for name in ("lib.rs", "main.rs"):
            if os.path.isfile(os.path.join(src, name)):
                self.roots.append(os.path.join("src", name))
        bindir = os.path.join(src, "bin")
        if os.path.isdir(bindir):
            for e in sorted(os.listdir(bindir)):
                if e.endswith(".rs"):
                    self.roots.append(os.path.join("src", "bin", e))
                elif os.path.isfile(os.path.join(bindir, e, "main.rs")):
                    self.roots.append(os.path.join("src", "bin", e, "main.rs"))
        for r in self.roots:
            self._read(r, "lib" if r == os.path.join("src", "lib.rs") else r, ())
        for dirpath, _, names in os.walk(src):
            for n in sorted(names):
                rel = os.path.relpath(os.path.join(dirpath, n), self.root)
                if n.endswith(".rs") and rel not in self.files:
                    self.orphans.append(rel)

    def _items(self, crate, mod):
        info = self.files.get(self.modules.get((crate, mod)))
        return info.items.get(mod, set()) if info else set()

    def _bindings(self, crate, mod):
        info = self.files.get(self.modules.get((crate, mod)))
        return [b for b in info.bindings if b.mod == mod] if info else []

    def _start(self, crate, ctx, segs):
        """(crate, module, rest) for a path that starts at a fixed module, else None."""
        first = segs[0]
        if first in ("crate", "$crate"):
            return crate, (), list(segs[1:])
        if first == self.lib and crate != "lib":
            return "lib", (), list(segs[1:])
        if first in ("self", "super"):
            mod, rest = ctx, list(segs)
            while rest and rest[0] in ("self", "super"):
                if rest[0] == "super":
                    if not mod:
                        return None
                    mod = mod[:-1]
                rest = rest[1:]
            return crate, mod, rest
        return None

    def _lookup(self, crate, mod, name, rest, depth):
        """The file that `name` (then `rest`) names in module mod, or None if mod has no such
        name (it comes from outside the package, or is not resolvable here)."""
        if depth > 20:
            return None
        if (crate, mod + (name,)) in self.modules:
            return self._walk(crate, mod + (name,), rest, depth)
        if name in self._items(crate, mod):
            return self.modules[(crate, mod)]
        binds = self._bindings(crate, mod)
        for b in binds:
            if b.name == name:
                return self._resolve(crate, mod, b.path + rest, depth + 1)
        for b in binds:
            if b.name == "*":
                m = self._module_of(crate, mod, b.path, depth + 1)
                if m is not None:
                    t = self._lookup(m[0], m[1], name, rest, depth + 1)
                    if t is not None:
                        return t
        return None

    def _walk(self, crate, mod, rest, depth):
        """The file a path names once it has reached module mod (mod's own file if the rest is
        an item, a variant or an associated name of mod)."""
        if rest:
            t = self._lookup(crate, mod, rest[0], rest[1:], depth)
            if t is not None:
                return t
        return self.modules[(crate, mod)]

    def _module_of(self, crate, ctx, segs, depth):
        """(crate, module) a path names, if it names a module of the package."""
        if depth > 20 or not segs:
            return None
        s = self._start(crate, ctx, segs)
        if s is None:
            s = crate, ctx, list(segs)
        crate, mod, rest = s
        for name in rest:
            if (crate, mod + (name,)) in self.modules:
                mod = mod + (name,)
                continue
            b = next((b for b in self._bindings(crate, mod) if b.name == name), None)
            m = self._module_of(crate, mod, b.path, depth + 1) if b is not None else None
            if m is None:
                return None
            crate, mod = m
        return crate, mod

    def _resolve(self, crate, ctx, segs, depth=0):
        """The file a path names from module ctx, or None when it leaves the package."""
        if depth > 20 or not segs:
            return None
        s = self._start(crate, ctx, segs)
        if s is not None:
            return self._walk(s[0], s[1], s[2], depth)
        # A name in scope: a child module, an item, or a `use` binding of ctx or its globs.
        return self._lookup(crate, ctx, segs[0], list(segs[1:]), depth)

    def _add(self, a, b, line, text):
        if a != b:
            ev = self.edges.setdefault((a, b), [])
            if (line, text) not in ev:
                ev.append((line, text))
                ev.sort()

    def _resolve_all(self):
        for rel, info in self.files.items():
            for ctx, segs, line in info.paths:
                if segs[0] in ("Self",):
                    continue
                t = self._resolve(info.crate, ctx, segs)
                if t is not None:
                    self._add(rel, t, line, "::".join(segs))
            for b in info.bindings:
                if b.public and b.name != "_" and info.code_ids.get(b.name, 0) == 0:
                    continue  # a re-export only: followed by the paths that go through it
                if b.public and b.name == "*":
                    continue
                t = self._resolve(info.crate, b.mod, b.path)
                if t is not None:
                    self._add(rel, t, b.line, b.text)

    def adjacency(self):
        adj = {f: set() for f in self.files}
        for a, b in self.edges:
            adj[a].add(b)
        return adj

    def cycles(self):
        """Strongly connected components of more than one file (Tarjan), sorted."""
        adj = self.adjacency()
        index, low, on, stack, out = {}, {}, set(), [], []
        counter = [0]

        def strong(v):
            work = [(v, iter(sorted(adj[v])))]
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            while work:
                node, it = work[-1]
                advanced = False
                for w in it:
                    if w not in index:
                        index[w] = low[w] = counter[0]
                        counter[0] += 1
                        stack.append(w)
                        on.add(w)
                        work.append((w, iter(sorted(adj[w]))))
                        advanced = True
                        break
                    if w in on:
                        low[node] = min(low[node], index[w])
                if advanced:
                    continue
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))

        for v in sorted(adj):
            if v not in index:
                strong(v)
        return sorted(out)


# --- output ------------------------------------------------------------------------------------

def describe(graph, comp, out):
    members = set(comp)
    pairs = sorted((a, b) for (a, b) in graph.edges if a in members and b in members)
    both = [(a, b) for (a, b) in pairs if (b, a) in graph.edges and a < b]
    shape = ", ".join(f"{a} <-> {b}" for a, b in both) if both else " -> ".join(comp)
    out.append(f"cycle of {len(comp)} files: {shape}")
    for a, b in pairs:
        ev = graph.edges[(a, b)]
        shown = "; ".join(f"{a}:{line} {text}" for line, text in ev[:3])
        more = f" (+{len(ev) - 3} more)" if len(ev) > 3 else ""
        out.append(f"    {a} -> {b}: {shown}{more}")


def run(root, list_graph, stdout):
    g = Graph(root)
    lines = []
    for o in g.orphans:
        lines.append(f"note: {o} is in no module tree (no `mod` declaration reaches it): not read")
    if list_graph:
        for f in sorted(g.files):
            targets = sorted(b for (a, b) in g.edges if a == f)
            lines.append(f"{f}" + ("" if targets else "  (imports no other file)"))
            for t in targets:
                ev = g.edges[(f, t)]
                nums = sorted({line for line, _ in ev})
                lines.append(f"    -> {t}  (line{'s' if len(nums) > 1 else ''} "
                             f"{', '.join(str(k) for k in nums[:8])}"
                             + (", ..." if len(nums) > 8 else "") + ")")
    cyc = g.cycles()
    for c in cyc:
        describe(g, c, lines)
    if cyc:
        lines.append(f"{len(cyc)} import cycle(s) among the {len(g.files)} files of {root}/src: "
                     "move the shared items down into a file both sides import (a leaf), "
                     "or make one side stop naming the other")
    else:
        lines.append(f"no import cycles among the {len(g.files)} files of {root}/src "
                     f"({len(g.edges)} file-to-file imports)")
    stdout.write("\n".join(lines) + "\n")
    return 1 if cyc else 0


# --- self-test ---------------------------------------------------------------------------------

def plant(root, files):
    with open(os.path.join(root, "Cargo.toml"), "w", encoding="utf-8") as f:
        f.write('[package]\nname = "synth-crate"\nversion = "0.1.0"\n')
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


CLEAN = {
    # A facade: lib.rs and a/mod.rs re-export; children name their parent (not a cycle).
    "src/lib.rs": "pub mod a;\npub mod b;\npub mod c;\npub mod k;\npub use a::Y;\n",
    "src/a/mod.rs": "//! doc: [`child::Y`] and crate::b::B in a doc comment\nmod child;\n"
                    "pub use child::Y;\npub struct X;\n",
    "src/a/child.rs": "use super::X;\npub struct Y(pub X);\n",
    "src/b.rs": (
        "use crate::a::Y; // crate::c::Z in a comment\n"
        "pub struct B;\n"
        "const S: &str = \"crate::c::Z\";\n"
        "const R: &str = r#\"crate::c::Z \" still raw\"#;\n"
        "const Q: char = '\"';\n"
        "fn f<'a>(x: &'a str) -> &'a str { let _ = b'x'; let _ = '\\''; x }\n"
        "pub fn g(y: Y) -> Y { y }\n"
        "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn t() { let _ = B; }\n}\n"
    ),
    "src/c.rs": "/* nested /* crate::b::B */ still a comment: crate::b::B */\npub struct Z;\n"
                "pub fn z() -> crate::a::X { crate::a::X }\n",
    # A parent that names only its own items; the leaf imports the parent: one way.
    "src/k/mod.rs": "pub mod leaf;\npub const BLOCK: usize = 16;\n",
    "src/k/leaf.rs": "use super::BLOCK;\npub fn run() -> usize { BLOCK }\n",
}

PLANTED = {
    "src/lib.rs": "pub mod p;\npub mod q;\npub mod r;\npub mod k;\npub mod m;\n",
    # p -> q -> r -> p, by inline paths only (no `use` line).
    "src/p.rs": "pub fn f() { crate::q::g() }\n",
    "src/q.rs": "pub fn g() { let _ = crate::r::h; }\n",
    "src/r.rs": "pub fn h() { if false { crate::p::f() } }\n",
    # The parent dispatches into its child, the child takes the parent's constant: a cycle.
    "src/k/mod.rs": "mod leaf;\npub const BLOCK: usize = 16;\npub fn go() -> usize { leaf::run() }\n",
    "src/k/leaf.rs": "use super::BLOCK;\npub fn run() -> usize { BLOCK }\n",
    # Siblings through super:: in a use group with a rename, and a type in a signature.
    "src/m/mod.rs": "pub mod n;\npub mod o;\n",
    "src/m/n.rs": "use super::{o::{Thing as T}};\npub struct N(pub T);\n",
    "src/m/o.rs": "pub struct Thing;\nimpl Thing {\n    pub fn f(_: super::n::N) {}\n}\n",
    # A binary whose front end calls back into main.rs, and reaches the library by its name.
    "src/main.rs": "mod app;\npub fn helper() {}\nfn main() { app::run() }\n",
    "src/app/mod.rs": "use synth_crate::p;\npub fn run() { p::f(); crate::helper() }\n",
}


class Sink:
    """Collects what `run` prints."""

    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s


def self_test():
    failures = []

    def check(what, ok):
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    with tempfile.TemporaryDirectory() as d:
        plant(d, CLEAN)
        g = Graph(d)
        check("clean tree: no cycle", g.cycles() == [])
        check("a path through a re-export reaches the defining file (b -> a/child)",
              ("src/b.rs", "src/a/child.rs") in g.edges)
        check("a re-export alone is not an import (a/mod.rs -> a/child.rs absent)",
              ("src/a/mod.rs", "src/a/child.rs") not in g.edges)
        check("a child naming super:: imports its parent (a/child -> a/mod, k/leaf -> k/mod)",
              ("src/a/child.rs", "src/a/mod.rs") in g.edges
              and ("src/k/leaf.rs", "src/k/mod.rs") in g.edges)
        check("`mod child;` is not an import (k/mod -> k/leaf absent)",
              ("src/k/mod.rs", "src/k/leaf.rs") not in g.edges)
        check("comments, doc comments, strings, raw strings, chars are not imports",
              ("src/b.rs", "src/c.rs") not in g.edges and ("src/c.rs", "src/b.rs") not in g.edges
              and ("src/a/mod.rs", "src/b.rs") not in g.edges)
        check("an inline crate:: path in code is an import (c -> a/mod)",
              ("src/c.rs", "src/a/mod.rs") in g.edges)
        check("`use super::*` in an inline test module is the file itself (no edge, no error)",
              all(a != b for (a, b) in g.edges))

    with tempfile.TemporaryDirectory() as d:
        plant(d, PLANTED)
        g = Graph(d)
        cyc = g.cycles()
        check("planted 3-file cycle by inline paths found",
              ["src/p.rs", "src/q.rs", "src/r.rs"] in cyc)
        check("planted parent <-> child cycle found (mod.rs dispatching into its child)",
              ["src/k/leaf.rs", "src/k/mod.rs"] in cyc)
        check("planted sibling cycle through super:: and a renamed group import found",
              ["src/m/n.rs", "src/m/o.rs"] in cyc)
        check("planted binary cycle found (main.rs <-> app/mod.rs)",
              ["src/app/mod.rs", "src/main.rs"] in cyc)
        check("a binary reaches the library by its crate name (app/mod.rs -> p.rs)",
              ("src/app/mod.rs", "src/p.rs") in g.edges)
        check("exactly the four planted cycles", len(cyc) == 4)

        sink = Sink()
        code = run(d, False, sink)
        check("exit status 1 and each cycle printed with the line that makes it",
              code == 1 and "cycle of 3 files" in sink.text
              and "src/r.rs:1 crate::p::f" in sink.text
              and "src/k/leaf.rs <-> src/k/mod.rs" in sink.text)

    with tempfile.TemporaryDirectory() as d:
        plant(d, CLEAN)
        sink = Sink()
        check("exit status 0 on the clean tree", run(d, True, sink) == 0 and "no import cycles" in sink.text)

    with tempfile.TemporaryDirectory() as d:
        plant(d, {"src/lib.rs": "mod missing;\n"})
        try:
            Graph(d)
            check("a `mod` whose file is missing is an error, not a silent gap", False)
        except Unreadable as e:
            check("a `mod` whose file is missing is an error, not a silent gap", "missing" in str(e))

    if failures:
        print(f"import_cycles self-test: {len(failures)} check(s) FAILED", file=sys.stderr)
        return 1
    print("import_cycles self-test: all checks passed")
    return 0


def main(argv):
    args = list(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if "--root" in args:
        k = args.index("--root")
        if k + 1 >= len(args):
            print("import_cycles: --root needs a directory", file=sys.stderr)
            return 2
        root = args[k + 1]
        del args[k:k + 2]
    unknown = [a for a in args if a not in ("--list", "--self-test", "-h", "--help")]
    if unknown or "-h" in args or "--help" in args:
        print(__doc__.strip(), file=sys.stderr if unknown else sys.stdout)
        if unknown:
            print(f"import_cycles: unknown argument(s): {' '.join(unknown)}", file=sys.stderr)
        return 2 if unknown else 0
    if "--self-test" in args:
        return self_test()
    try:
        return run(root, "--list" in args, sys.stdout)
    except Unreadable as e:
        print(f"{e}; nothing was checked", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
