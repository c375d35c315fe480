//! File-lease patterns: paths and globs relative to the project root, and
//! the two questions leases ask of them: does a path fall under a pattern,
//! and can two patterns ever name the same path (a second exclusive lease
//! must then be refused).
//!
//! Both answers are exact. A pattern compiles to a small NFA over the
//! characters of a path; `matches` runs it on the path, and `overlaps`
//! searches the product of two of them for a path both accept. Only
//! well-formed project paths count (no empty, `.` or `..` segment), so both
//! also run a four-state check of the segment being read: without it `**`
//! would match `../x`, and `.?` would overlap `?.` through `..` alone.

use std::collections::VecDeque;

/// A lease pattern, normalized: relative to the project root, '/'-separated,
/// no `.` or empty segments, no `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// The normalized text: segments joined by '/', runs of `*` inside a
    /// segment collapsed to one, no two `**` segments in a row.
    text: String,
}

impl Pattern {
    /// Parse a pattern given relative to the project root (the caller has
    /// already made it relative).
    ///
    /// An empty or blank pattern, a control character (NUL included), an
    /// absolute path or any `..` segment is refused with a short message.
    /// `.` segments and repeated '/' are dropped; a trailing '/' names a
    /// directory and leases everything under it (`src/` is `src/**`), and
    /// `.` or `./` alone is the whole project (`**`).
    ///
    /// `*` stands for any run of characters other than '/', `?` for one
    /// character other than '/', and a `**` segment for any number of whole
    /// segments: zero or more in `src/**/x.rs` (so `src/x.rs` matches), one
    /// or more at the end of `src/**` (so `src` itself does not). `**`
    /// inside a segment is a plain `*`. `[`, `]`, `{`, `}` and backslash are
    /// ordinary characters.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.trim().is_empty() {
            return Err("empty path or glob".to_string());
        }
        if text.chars().any(char::is_control) {
            return Err("contains a NUL or other control character".to_string());
        }
        if text.starts_with('/') {
            return Err("absolute path: it must be relative to the project".to_string());
        }
        let raw: Vec<&str> = text.split('/').collect();
        // Even `a/../b`, which stays inside: refusing is simpler to explain
        // than resolving, and a caller with a real path never sends one.
        if raw.contains(&"..") {
            return Err("a `..` segment leaves the project".to_string());
        }
        // `src/` and `src/.` name the directory: the lease is on what is
        // under it. This also makes `.` and `./` the whole project.
        let directory = matches!(raw.last(), Some(&("" | ".")));
        let mut segments: Vec<String> = Vec::new();
        for segment in raw {
            if segment.is_empty() || segment == "." {
                continue;
            }
            if segment == "**" {
                // `**/**` says no more than `**`, wherever it stands; keeping
                // one gives a single spelling for equal patterns.
                if segments.last().is_some_and(|s| s == "**") {
                    continue;
                }
                segments.push(segment.to_string());
            } else {
                segments.push(collapse_stars(segment));
            }
        }
        if directory && segments.last().is_none_or(|s| s != "**") {
            segments.push("**".to_string());
        }
        Ok(Pattern {
            text: segments.join("/"),
        })
    }

    /// The normalized text (e.g. "src/**").
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern has no metacharacters: a plain path.
    pub fn is_literal(&self) -> bool {
        !self.text.contains(['*', '?'])
    }

    /// A literal pattern naming a directory becomes `<dir>/**`, everything
    /// under it (the caller knows whether it is a directory on disk). Any
    /// other pattern is returned as it is.
    pub fn as_directory(&self) -> Pattern {
        if self.is_literal() {
            Pattern {
                text: format!("{}/**", self.text),
            }
        } else {
            self.clone()
        }
    }

    /// Whether the normalized, relative path `path` is matched by this
    /// pattern. A literal pattern matches the path itself (and, once
    /// `as_directory` has been applied, everything under it). A path that
    /// is not normalized (empty, absolute, with an empty, `.` or `..`
    /// segment) matches nothing.
    pub fn matches(&self, path: &str) -> bool {
        let nfa = compile(&self.text);
        let mut current = vec![false; nfa.len()];
        enter(&nfa, &mut current, 0);
        let mut segment = Seg::Empty;
        for c in path.chars() {
            segment = match segment.after(c) {
                Some(s) => s,
                None => return false,
            };
            let mut next = vec![false; nfa.len()];
            for (node, &on) in nfa.iter().zip(&current) {
                match node.step {
                    Some((class, to)) if on && class.accepts(c) => enter(&nfa, &mut next, to),
                    _ => {}
                }
            }
            current = next;
        }
        segment == Seg::Name && current[nfa.len() - 1]
    }

    /// Whether some path exists that both patterns match. Exact: it
    /// searches the pairs of positions in the two patterns (times the state
    /// of the segment being read) for a path both accept, so the cost is
    /// proportional to the product of the patterns' lengths.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        common_path(&self.text, &other.text).is_some()
    }
}

/// A shortest well-formed path both patterns match, if there is one: a
/// breadth-first search of the product of their NFAs. Where a class allows
/// any character the path shows the stand-in 'x' (see `common`). Kept apart
/// from `overlaps` so the tests can check each "yes" by its example.
fn common_path(a: &str, b: &str) -> Option<String> {
    let (a, b) = (compile(a), compile(b));
    let (a_end, b_end) = (a.len() - 1, b.len() - 1);
    let mut search = Search {
        width: b.len(),
        came_from: vec![None; a.len() * b.len() * SEG_STATES],
        queue: VecDeque::new(),
    };
    let start = search.index((0, 0, Seg::Empty));
    search.visit(start, (0, 0, Seg::Empty), None);
    while let Some(state) = search.queue.pop_front() {
        let (i, j, segment) = state;
        let here = search.index(state);
        if i == a_end && j == b_end && segment == Seg::Name {
            return Some(search.spell(start, here));
        }
        // An epsilon move is taken by one side alone; the other waits.
        if let Some(to) = a[i].eps {
            search.visit(here, (to, j, segment), None);
        }
        if let Some(to) = b[j].eps {
            search.visit(here, (i, to, segment), None);
        }
        if let (Some((ca, ta)), Some((cb, tb))) = (a[i].step, b[j].step) {
            for c in common(ca, cb).into_iter().flatten() {
                if let Some(s) = segment.after(c) {
                    search.visit(here, (ta, tb, s), Some(c));
                }
            }
        }
    }
    None
}

/// The state of `common_path`'s search. A state is a position in each
/// NFA and what has been read of the current segment.
struct Search {
    /// The number of states of the second NFA.
    width: usize,
    /// For each state reached, the state it was first reached from and the
    /// character read on the way (None for an epsilon move).
    came_from: Vec<Option<(usize, Option<char>)>>,
    queue: VecDeque<(usize, usize, Seg)>,
}

impl Search {
    fn index(&self, (i, j, segment): (usize, usize, Seg)) -> usize {
        (i * self.width + j) * SEG_STATES + segment as usize
    }

    /// Queue `state`, reached from state `from` by reading `c`, unless it
    /// has been reached before.
    fn visit(&mut self, from: usize, state: (usize, usize, Seg), c: Option<char>) {
        let index = self.index(state);
        if self.came_from[index].is_none() {
            self.came_from[index] = Some((from, c));
            self.queue.push_back(state);
        }
    }

    /// The characters read on the way from `start` to `end`.
    fn spell(&self, start: usize, end: usize) -> String {
        let mut read = Vec::new();
        let mut at = end;
        while at != start {
            match self.came_from[at] {
                Some((from, c)) => {
                    read.extend(c);
                    at = from;
                }
                // Every state queued has its origin recorded.
                None => break,
            }
        }
        read.iter().rev().collect()
    }
}

/// `a**b` is `a*b`: inside a segment, several stars match what one does.
fn collapse_stars(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        if !(c == '*' && out.ends_with('*')) {
            out.push(c);
        }
    }
    out
}

/// The characters one step of the NFA accepts.
#[derive(Debug, Clone, Copy)]
enum Class {
    Char(char),
    NotSlash,
    AnyChar,
}

impl Class {
    fn accepts(self, c: char) -> bool {
        match self {
            Class::Char(d) => c == d,
            Class::NotSlash => c != '/',
            Class::AnyChar => true,
        }
    }
}

/// One NFA state. Every construct below needs at most one character step
/// and one epsilon move per state, which keeps both searches simple.
#[derive(Debug, Clone, Copy)]
struct Node {
    /// On a character of the class, go to the state.
    step: Option<(Class, usize)>,
    /// Go to the state without reading anything.
    eps: Option<usize>,
}

/// The NFA of a normalized pattern. States are numbered in order and the
/// last one is the only accepting state.
fn compile(text: &str) -> Vec<Node> {
    fn push(nfa: &mut Vec<Node>, step: Option<(Class, usize)>, eps: Option<usize>) {
        nfa.push(Node { step, eps });
    }
    let segments: Vec<&str> = text.split('/').collect();
    let last = segments.len() - 1;
    let mut nfa: Vec<Node> = Vec::new();
    for (k, segment) in segments.iter().enumerate() {
        // A `**` before other segments reads the '/' after each segment it
        // takes, so it brings its own separator.
        if k > 0 && segments[k - 1] != "**" {
            let n = nfa.len();
            push(&mut nfa, Some((Class::Char('/'), n + 1)), None);
        }
        let n = nfa.len();
        if *segment == "**" && k == last {
            // The rest of the path, whatever it holds. The segment check
            // makes it at least one well-formed segment.
            push(&mut nfa, Some((Class::AnyChar, n)), Some(n + 1));
        } else if *segment == "**" {
            // `(segment '/')*`: an entry that may skip the lot, then each
            // segment non-empty and closed by its '/'. The skip must leave
            // from the entry only: from the middle of a segment it would let
            // `a/**/b` match `a/xb`.
            push(&mut nfa, Some((Class::NotSlash, n + 1)), Some(n + 3));
            push(&mut nfa, Some((Class::NotSlash, n + 1)), Some(n + 2));
            push(&mut nfa, Some((Class::Char('/'), n)), None);
        } else {
            for c in segment.chars() {
                let n = nfa.len();
                match c {
                    '*' => push(&mut nfa, Some((Class::NotSlash, n)), Some(n + 1)),
                    '?' => push(&mut nfa, Some((Class::NotSlash, n + 1)), None),
                    c => push(&mut nfa, Some((Class::Char(c), n + 1)), None),
                }
            }
        }
    }
    push(&mut nfa, None, None);
    nfa
}

/// Add `state` and everything reachable from it by epsilon moves. The set
/// is kept closed, so a state already in it has its followers in it too.
fn enter(nfa: &[Node], set: &mut [bool], state: usize) {
    let mut s = state;
    while !set[s] {
        set[s] = true;
        match nfa[s].eps {
            Some(to) => s = to,
            None => break,
        }
    }
}

/// The characters both classes accept, as far as the search needs to tell
/// them apart. A class accepts every character other than '/' alike, and
/// the segment check allows after any of them ('.' included) no more than
/// after 'x', so 'x' stands in for them all; '/' is the one that differs.
fn common(a: Class, b: Class) -> [Option<char>; 2] {
    match (a, b) {
        (Class::Char(c), other) | (other, Class::Char(c)) => [other.accepts(c).then_some(c), None],
        (Class::NotSlash, _) | (_, Class::NotSlash) => [Some('x'), None],
        (Class::AnyChar, Class::AnyChar) => [Some('x'), Some('/')],
    }
}

/// How many values `Seg` has: the product search indexes by them.
const SEG_STATES: usize = 4;

/// What has been read of the current path segment: just enough to refuse
/// an empty, `.` or `..` segment, and a path that starts or ends with '/'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    Empty,
    Dot,
    DotDot,
    Name,
}

impl Seg {
    /// The state after reading `c`, or None if the path is malformed.
    fn after(self, c: char) -> Option<Seg> {
        match (self, c) {
            (Seg::Name, '/') => Some(Seg::Empty),
            (_, '/') => None,
            (Seg::Empty, '.') => Some(Seg::Dot),
            (Seg::Dot, '.') => Some(Seg::DotDot),
            _ => Some(Seg::Name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{common_path, Pattern};

    fn p(text: &str) -> Pattern {
        match Pattern::parse(text) {
            Ok(pattern) => pattern,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn overlap(a: &str, b: &str) -> bool {
        let (a, b) = (p(a), p(b));
        let forward = a.overlaps(&b);
        assert_eq!(forward, b.overlaps(&a), "asymmetric: {a:?} {b:?}");
        forward
    }

    #[test]
    fn overlap_examples() {
        assert!(overlap("src/*.rs", "src/main.rs"));
        assert!(!overlap("src/*.rs", "src/*.md"));
        assert!(overlap("src/**", "src/a/b.rs"));
        assert!(!overlap("src/*", "src/a/b.rs"));
        assert!(overlap("**/x.rs", "a/x.rs"));
        assert!(overlap("a?c", "abc"));
        assert!(!overlap("*.rs", "lib/*.rs"));
        assert!(overlap("src/**/mod.rs", "src/mod.rs"));
        assert!(overlap("**", "README.md"));
        assert!(overlap("**", "a/b/c/d"));
        assert!(overlap("**", "**/*.rs"));
        assert!(overlap("a/*/c", "a/b/*"));
    }

    #[test]
    fn overlap_more() {
        assert!(overlap("docs/**", "docs/"));
        assert!(!overlap("docs/**", "docs"));
        assert!(!overlap("docs/**", "doc/**"));
        assert!(overlap("*", "*"));
        assert!(overlap("*.rs", "main.*"));
        assert!(!overlap("a*", "b*"));
        assert!(overlap("a*", "*b"));
        assert!(!overlap("?", "??"));
        assert!(overlap("?*", "??"));
        assert!(overlap("src/**/mod.rs", "src/*/mod.rs"));
        assert!(overlap("src/**/mod.rs", "**/store/*.rs"));
        assert!(!overlap("src/**/mod.rs", "tests/**"));
        assert!(!overlap("a/**/b", "a/xb"));
        assert!(overlap("a/**/b", "a/x/y/b"));
        assert!(overlap("**/a/**", "**/b/**"));
        assert!(!overlap("a/**", "b/**"));
        assert!(overlap("a/*/c/**", "**/b/c/d"));
        // The only common string is `..`, which is no path in a project.
        assert!(!overlap(".?", "?."));
        assert!(overlap(".?", "?*"));
        assert!(overlap("...", "?.."));
        // `*` may match nothing, but a segment never is empty.
        assert!(!overlap("a/*/b", "a/b"));
        assert!(!overlap("*/b", "**/b/b/*"));
    }

    #[test]
    fn matches_examples() {
        let x = p("src/**/x.rs");
        assert!(x.matches("src/x.rs"));
        assert!(x.matches("src/a/x.rs"));
        assert!(x.matches("src/a/b/x.rs"));
        assert!(!x.matches("src/ax.rs"));
        assert!(!x.matches("x.rs"));
        let tree = p("src/**");
        assert!(tree.matches("src/a"));
        assert!(tree.matches("src/a/b"));
        assert!(!tree.matches("src"));
        assert!(!tree.matches("srcx/a"));
        let any = p("**/x.rs");
        assert!(any.matches("x.rs"));
        assert!(any.matches("a/b/x.rs"));
        assert!(!any.matches("a/bx.rs"));
        let star = p("src/*.rs");
        assert!(star.matches("src/.rs"));
        assert!(star.matches("src/main.rs"));
        assert!(!star.matches("src/a/main.rs"));
        let one = p("a?c");
        assert!(one.matches("abc"));
        assert!(one.matches("aéc"));
        assert!(!one.matches("a/c"));
        assert!(!one.matches("ac"));
        let lit = p("README.md");
        assert!(lit.matches("README.md"));
        assert!(!lit.matches("README.mdx"));
        assert!(!lit.matches("docs/README.md"));
    }

    #[test]
    fn malformed_paths_match_nothing() {
        let all = p("**");
        assert!(all.matches("a"));
        assert!(all.matches("a/b/.c/..d/..."));
        for bad in [
            "", "/a", "a/", "a//b", ".", "..", "./a", "a/./b", "a/../b", "../x",
        ] {
            assert!(!all.matches(bad), "{bad:?}");
        }
        assert!(!p("*").matches("."));
        assert!(!p("?/a").matches("./a"));
    }

    #[test]
    fn metacharacters_that_are_literal() {
        let brackets = p("a[bc]");
        assert!(brackets.is_literal());
        assert!(brackets.matches("a[bc]"));
        assert!(!brackets.matches("ab"));
        let braces = p("{a,b}.rs");
        assert!(braces.matches("{a,b}.rs"));
        assert!(!braces.matches("a.rs"));
        let backslash = p(r"a\*b");
        assert!(!backslash.is_literal());
        assert!(backslash.matches(r"a\xyb"));
        assert!(!backslash.matches("a*b"));
        assert!(p(r"a\b").matches(r"a\b"));
    }

    #[test]
    fn normalization() {
        let cases = [
            ("./src//a/./b", "src/a/b"),
            ("src/", "src/**"),
            ("src//", "src/**"),
            ("src/.", "src/**"),
            ("src/**/", "src/**"),
            (".", "**"),
            ("./", "**"),
            ("././/", "**"),
            ("**", "**"),
            ("a**b", "a*b"),
            ("***", "*"),
            ("a/**/**/b", "a/**/b"),
            ("**/./**", "**"),
            ("*/", "*/**"),
            ("src/**/mod.rs", "src/**/mod.rs"),
            (" a b ", " a b "),
        ];
        for (input, expected) in cases {
            assert_eq!(p(input).as_str(), expected, "{input:?}");
        }
        assert_eq!(p("a**b"), p("a*b"));
    }

    #[test]
    fn errors() {
        let cases = [
            ("", "empty path or glob"),
            ("   ", "empty path or glob"),
            ("/etc/passwd", "must be relative to the project"),
            ("/", "must be relative to the project"),
            ("../x", "leaves the project"),
            ("a/../../b", "leaves the project"),
            ("a/..", "leaves the project"),
            ("a\0b", "control character"),
            ("a\nb", "control character"),
            ("\u{7f}", "control character"),
        ];
        for (input, fragment) in cases {
            match Pattern::parse(input) {
                Ok(pattern) => panic!("{input:?} parsed as {pattern:?}"),
                Err(e) => assert!(e.contains(fragment), "{input:?}: {e}"),
            }
        }
        // Names that only look like `..`.
        assert_eq!(p("a/..b/...").as_str(), "a/..b/...");
    }

    #[test]
    fn literal_and_directory() {
        assert!(p("src/main.rs").is_literal());
        assert!(!p("src/*.rs").is_literal());
        assert!(!p("src/?").is_literal());
        assert!(!p("src/").is_literal());
        let dir = p("src/store").as_directory();
        assert_eq!(dir.as_str(), "src/store/**");
        assert!(dir.matches("src/store/mod.rs"));
        assert!(dir.matches("src/store/sqlite/mod.rs"));
        assert!(!dir.matches("src/storefront.rs"));
        assert!(dir.overlaps(&p("src/**/mod.rs")));
        assert!(!dir.overlaps(&p("src/store")));
        // Already a glob: unchanged.
        assert_eq!(p("src/*").as_directory(), p("src/*"));
    }

    // ---- cross-checks against brute force ----

    /// A tiny deterministic generator (xorshift64), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// An independent matcher, segment by segment with backtracking: the
    /// reference the NFA is checked against. `path` must be well formed.
    fn reference(pattern: &str, path: &str) -> bool {
        fn segments(p: &[&str], s: &[&str]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((&"**", [])) => !s.is_empty(),
                Some((&"**", rest)) => (0..=s.len()).any(|k| segments(rest, &s[k..])),
                Some((seg, rest)) => match s.split_first() {
                    Some((first, more)) => {
                        let (pc, sc): (Vec<char>, Vec<char>) =
                            (seg.chars().collect(), first.chars().collect());
                        chars(&pc, &sc) && segments(rest, more)
                    }
                    None => false,
                },
            }
        }
        fn chars(p: &[char], s: &[char]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some(('*', rest)) => (0..=s.len()).any(|k| chars(rest, &s[k..])),
                Some(('?', rest)) => !s.is_empty() && chars(rest, &s[1..]),
                Some((c, rest)) => s.first() == Some(c) && chars(rest, &s[1..]),
            }
        }
        let p: Vec<&str> = pattern.split('/').collect();
        let s: Vec<&str> = path.split('/').collect();
        segments(&p, &s)
    }

    /// Every well-formed path over {a, b, /} up to `max` characters.
    fn all_paths(max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut layer = vec![String::new()];
        for _ in 0..max {
            let mut next = Vec::new();
            for s in &layer {
                for c in ['a', 'b', '/'] {
                    let mut t = s.clone();
                    t.push(c);
                    next.push(t);
                }
            }
            out.extend(
                next.iter()
                    .filter(|s| !s.starts_with('/') && !s.ends_with('/') && !s.contains("//"))
                    .cloned(),
            );
            layer = next;
        }
        out
    }

    const PIECES: [&str; 6] = ["a", "b", "/", "*", "?", "**"];

    /// Parse `text` made of `PIECES`, keeping it if it is new.
    fn add_pattern(out: &mut Vec<Pattern>, text: &str) {
        match Pattern::parse(text) {
            Ok(pattern) => {
                if !out.contains(&pattern) {
                    out.push(pattern);
                }
            }
            // Over this alphabet the only way to fail is a leading '/'.
            Err(e) => assert!(text.starts_with('/'), "{text:?}: {e}"),
        }
    }

    /// Every distinct pattern of one to `max` pieces.
    fn every_pattern(max: usize) -> Vec<Pattern> {
        let mut out = Vec::new();
        let mut layer = vec![String::new()];
        for _ in 0..max {
            let mut next = Vec::new();
            for s in &layer {
                for piece in PIECES {
                    let text = format!("{s}{piece}");
                    add_pattern(&mut out, &text);
                    next.push(text);
                }
            }
            layer = next;
        }
        out
    }

    /// Distinct random patterns of `min` to `max` pieces, from `tries` draws.
    fn random_patterns(seed: u64, tries: usize, min: usize, max: usize) -> Vec<Pattern> {
        let mut rng = Rng(seed);
        let mut out = Vec::new();
        for _ in 0..tries {
            let n = min + rng.below(max - min + 1);
            let text: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            add_pattern(&mut out, &text);
        }
        out
    }

    /// For each pattern, the bit set of `paths` it matches (by `reference`).
    fn match_sets(patterns: &[Pattern], paths: &[String]) -> Vec<Vec<u64>> {
        patterns
            .iter()
            .map(|pattern| {
                let mut bits = vec![0u64; paths.len().div_ceil(64)];
                for (k, path) in paths.iter().enumerate() {
                    if reference(pattern.as_str(), path) {
                        bits[k / 64] |= 1 << (k % 64);
                    }
                }
                bits
            })
            .collect()
    }

    fn intersect(a: &[u64], b: &[u64]) -> bool {
        a.iter().zip(b).any(|(x, y)| x & y != 0)
    }

    #[test]
    fn matches_agrees_with_reference() {
        let paths = all_paths(7);
        for pattern in random_patterns(0x5eed_0001, 400, 1, 6) {
            for path in &paths {
                assert_eq!(
                    pattern.matches(path),
                    reference(pattern.as_str(), path),
                    "{pattern:?} on {path:?}"
                );
            }
        }
    }

    /// Whether `path` is a well-formed project path.
    fn well_formed(path: &str) -> bool {
        path.split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
    }

    /// Check `overlaps` on one pair, both ways round. A "yes" must come
    /// with a well-formed example path that both patterns match (by the
    /// reference and by `matches`); `brute` says whether the brute-force
    /// search found a common path.
    fn check_pair(a: &Pattern, b: &Pattern, brute: bool) {
        let found = a.overlaps(b);
        assert_eq!(found, b.overlaps(a), "asymmetric: {a:?} {b:?}");
        match common_path(a.as_str(), b.as_str()) {
            Some(path) => {
                assert!(found);
                assert!(well_formed(&path), "{a:?} {b:?}: {path:?}");
                for pattern in [a, b] {
                    assert!(reference(pattern.as_str(), &path), "{pattern:?} {path:?}");
                    assert!(pattern.matches(&path), "{pattern:?} {path:?}");
                }
            }
            None => assert!(!found),
        }
        if brute {
            assert!(found, "missed overlap: {a:?} {b:?}");
        }
    }

    #[test]
    fn overlaps_exact_on_every_small_pattern() {
        // Two patterns of up to three pieces that overlap at all do so on
        // a path of at most seven characters (this test finds no "yes"
        // without one), so here brute force decides the whole answer.
        let paths = all_paths(7);
        let patterns = every_pattern(3);
        let sets = match_sets(&patterns, &paths);
        for (i, a) in patterns.iter().enumerate() {
            for (j, b) in patterns.iter().enumerate().skip(i) {
                let brute = intersect(&sets[i], &sets[j]);
                check_pair(a, b, brute);
                assert_eq!(a.overlaps(b), brute, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn overlaps_cross_checked_on_random_patterns() {
        // Longer patterns can need a longer common path than the brute
        // force tries, so a "no" is checked against it and a "yes" by its
        // example.
        let paths = all_paths(6);
        let patterns = random_patterns(0x5eed_0002, 300, 1, 6);
        let sets = match_sets(&patterns, &paths);
        for (i, a) in patterns.iter().enumerate() {
            for (j, b) in patterns.iter().enumerate().skip(i) {
                check_pair(a, b, intersect(&sets[i], &sets[j]));
            }
        }
    }

    #[test]
    fn matches_agrees_with_overlaps_on_literals() {
        let paths = all_paths(5);
        let literals: Vec<Pattern> = paths.iter().map(|path| p(path)).collect();
        for pattern in random_patterns(0x5eed_0003, 300, 1, 6) {
            for (path, literal) in paths.iter().zip(&literals) {
                assert_eq!(
                    pattern.matches(path),
                    pattern.overlaps(literal),
                    "{pattern:?} on {path:?}"
                );
            }
        }
        // And with dots and other characters the small alphabet lacks.
        for (pattern, path) in [
            ("*", ".a"),
            ("?", "é"),
            ("**/*.rs", "src/.hidden/x.rs"),
            ("?..", "..."),
            ("src/**", "src/[x]/{y}"),
        ] {
            let pattern = p(pattern);
            assert!(pattern.matches(path), "{pattern:?} on {path:?}");
            assert!(pattern.overlaps(&p(path)), "{pattern:?} vs {path:?}");
        }
    }
}
