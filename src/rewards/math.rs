//! Math accuracy: answer extraction, normalization (a superset of verl's `strip_string` and the
//! Minerva / DAPO `normalize_final_answer`) and equivalence by exact rationals, tuples, intervals
//! and sets. Anything it cannot decide is "not equal".
//!
//! Every step is a linear pass over the string: brace groups are found with one stack pass
//! ([`brace_matches`]) instead of a regex or a recursive parser, so a response of a megabyte or a
//! hundred thousand nested braces costs microseconds to milliseconds, never a hang.

use std::borrow::Cow;

use super::text::{is_py_space, py_strip};

/// Tags removed from a response before extraction (each replaced by a newline, so a tag ends the
/// `Final Answer:` line it closes).
const TAGS: [&str; 10] = [
    "<Parallel>",
    "</Parallel>",
    "<Path>",
    "</Path>",
    "<Summary>",
    "</Summary>",
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
];

/// A tag at the start of `s`: one of [`TAGS`] or a chat-template marker `<|...|>`.
fn tag_at(s: &str) -> Option<usize> {
    if let Some(t) = TAGS.iter().find(|t| s.starts_with(*t)) {
        return Some(t.len());
    }
    let rest = s.strip_prefix("<|")?;
    let end = rest.as_bytes().iter().take(40).position(|&c| c == b'|')?;
    rest[end..].starts_with("|>").then_some(2 + end + 2)
}

/// `s` with every tag replaced by a newline (borrowed when it has none).
fn remove_tags(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let Some(first) = memchr::memchr(b'<', b) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::new();
    let mut last = 0;
    let mut i = first;
    while let Some(k) = memchr::memchr(b'<', &b[i..]) {
        i += k;
        if let Some(len) = tag_at(&s[i..]) {
            if out.capacity() == 0 {
                out.reserve(s.len());
            }
            out.push_str(&s[last..i]);
            out.push('\n');
            i += len;
            last = i;
        } else {
            i += 1;
        }
    }
    if last == 0 {
        return Cow::Borrowed(s);
    }
    out.push_str(&s[last..]);
    Cow::Owned(out)
}

/// The line of `remove_tags(s)` that starts at byte `at` of `s`, read in place: it ends at a
/// newline or a tag. Also returns where the next line starts in `s` (None at the end of `s`).
fn tag_line(s: &str, at: usize) -> (&str, Option<usize>) {
    let b = s.as_bytes();
    let mut i = at;
    while let Some(k) = memchr::memchr2(b'\n', b'<', &b[i..]) {
        let p = i + k;
        if b[p] == b'\n' {
            return (&s[at..p], Some(p + 1));
        }
        if let Some(len) = tag_at(&s[p..]) {
            return (&s[at..p], Some(p + len));
        }
        i = p + 1;
    }
    (&s[at..], None)
}

/// For every `{` at byte i, `m[i]` is the byte index of its matching `}` (usize::MAX if none).
/// Escaped braces `\{` / `\}` count as braces too (they nest like them in LaTeX sets).
pub fn brace_matches(s: &str) -> Vec<usize> {
    let b = s.as_bytes();
    let mut m = vec![usize::MAX; b.len()];
    let mut stack = Vec::new();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'{' => stack.push(i),
            b'}' => {
                if let Some(o) = stack.pop() {
                    m[o] = i;
                }
            }
            _ => {}
        }
    }
    m
}

/// Content of the last `\boxed{...}` / `\fbox{...}` (balanced) or `\boxed x` (up to `$` or the
/// end of the line); earlier boxes are tried when the last one is unclosed.
fn last_boxed(s: &str) -> Option<&str> {
    // The last box alone costs only the text after it; the full pass runs when it is unusable.
    let after = last_box_start(s.as_bytes())?;
    box_content_at(s, after).or_else(|| all_boxes_last(s))
}

/// Byte index just after the last `\boxed` / `\fbox`, found from the end.
fn last_box_start(b: &[u8]) -> Option<usize> {
    let mut end = b.len();
    while let Some(i) = memchr::memrchr(b'\\', &b[..end]) {
        if b[i..].starts_with(b"\\boxed") {
            return Some(i + 6);
        }
        if b[i..].starts_with(b"\\fbox") {
            return Some(i + 5);
        }
        end = i;
    }
    None
}

/// The content of the box whose command ends at `after`: its balanced `{...}` group, or for
/// `\boxed x` the text up to `$` or the end of the line (None when empty).
fn box_content_at(s: &str, after: usize) -> Option<&str> {
    let b = s.as_bytes();
    match b.get(after)? {
        b'{' => matching_brace(b, after).map(|close| &s[after + 1..close]),
        b' ' => {
            let rest = &s[after + 1..];
            let end = rest.find(['$', '\n']).unwrap_or(rest.len());
            let content = py_strip(&rest[..end]);
            (!content.is_empty()).then_some(content)
        }
        _ => None,
    }
}

/// Index of the `}` that closes the `{` at `open` (a forward scan: the cost is the group).
fn matching_brace(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while let Some(k) = memchr::memchr2(b'{', b'}', &b[i..]) {
        i += k;
        if b[i] == b'{' {
            depth += 1;
        } else {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
        i += 1;
    }
    None
}

/// [`last_boxed`] over every box, last first, with one brace table: linear however many boxes
/// are unclosed.
fn all_boxes_last(s: &str) -> Option<&str> {
    let m = brace_matches(s);
    let b = s.as_bytes();
    let mut starts = Vec::new();
    let mut pos = 0;
    while let Some(k) = memchr::memchr(b'\\', &b[pos..]) {
        let i = pos + k;
        for cmd in ["\\boxed", "\\fbox"] {
            if s[i..].starts_with(cmd) {
                starts.push(i + cmd.len());
            }
        }
        pos = i + 1;
    }
    for &after in starts.iter().rev() {
        if after < b.len() && b[after] == b'{' {
            if m[after] != usize::MAX {
                return Some(&s[after + 1..m[after]]);
            }
        } else if let Some(content) = box_content_at(s, after) {
            return Some(content);
        }
    }
    None
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The answer of a `Final Answer:` line: its `\boxed{}` if any, else its first `$...$`, else the
/// line without the Minerva phrases ("The final answer is", "I hope it is correct.").
fn final_answer_content(line: &str) -> &str {
    let mut line = py_strip(line.trim_matches(|c: char| c == '*' || is_py_space(c)));
    if let Some(rest) = strip_prefix_ci(line, "the final answer is") {
        line = py_strip(rest);
    }
    let lower_end = "i hope it is correct.";
    if line.len() >= lower_end.len() {
        let cut = line.len() - lower_end.len();
        if line.is_char_boundary(cut) && line[cut..].eq_ignore_ascii_case(lower_end) {
            line = py_strip(&line[..cut]);
        }
    }
    if let Some(boxed) = last_boxed(line) {
        return boxed;
    }
    if let Some(a) = line.find('$') {
        let dollars = if line[a..].starts_with("$$") { 2 } else { 1 };
        let inner = &line[a + dollars..];
        if let Some(z) = inner.find('$') {
            return &inner[..z];
        }
    }
    line
}

/// The answer of a response: the last `Final Answer:` line (case-insensitive; the next non-empty
/// line when it is empty), else the last `\boxed{}` / `\fbox{}`; tags removed first.
pub fn extract_math_answer(response: &str) -> Option<String> {
    find_math_answer(response).map(Cow::into_owned)
}

/// [`extract_math_answer`] without copying: the answer is a slice of `response` unless tags had
/// to be removed from it.
pub fn find_math_answer(response: &str) -> Option<Cow<'_, str>> {
    if let Some(start) = last_final_answer(response) {
        // The lines of `remove_tags(response[start..])`, read in place.
        let rest = &response[start..];
        let mut at = 0;
        loop {
            let (line, next) = tag_line(rest, at);
            let content = py_strip(final_answer_content(line));
            if !content.is_empty() {
                return Some(Cow::Borrowed(content));
            }
            match next {
                Some(n) if n < rest.len() && py_strip(line).is_empty() => at = n,
                _ => break,
            }
        }
    }
    // No `\boxed` / `\fbox` at all: no answer (tags become newlines, so removing them cannot
    // make one), and no brace table to build.
    let after = last_box_start(response.as_bytes())?;
    let boxed = match quick_boxed_at(response, after) {
        Some(content) => match remove_tags(content) {
            Cow::Borrowed(c) => Cow::Borrowed(py_strip(c)),
            Cow::Owned(c) => Cow::Owned(py_strip(&c).to_string()),
        },
        // The last box is unclosed (or absent): the linear full search over earlier ones.
        None => Cow::Owned(py_strip(all_boxes_last(&remove_tags(response))?).to_string()),
    };
    (!boxed.is_empty()).then_some(boxed)
}

/// Byte index just after the colon of the last `Final Answer:` (case-insensitive, spaces or
/// `*` allowed before the colon). Searched backwards from colon to colon (rare in text, unlike
/// the letter f), so its cost is about the text after it.
fn last_final_answer(s: &str) -> Option<usize> {
    const KEY: &[u8] = b"final answer";
    let b = s.as_bytes();
    let mut end = b.len();
    while let Some(colon) = memchr::memrchr(b':', &b[..end]) {
        end = colon;
        // The spaces / stars before this colon belong to it alone: the walk stays linear.
        let mut k = colon;
        while k > 0 && matches!(b[k - 1], b' ' | b'*') {
            k -= 1;
        }
        if k >= KEY.len() && b[k - KEY.len()..k].eq_ignore_ascii_case(KEY) {
            return Some(colon + 1);
        }
    }
    None
}

/// Content of the last `\boxed{...}` / `\fbox{...}`, whose command ends at `after`, when it
/// is closed (the common case, found without scanning the text before it); `None` otherwise.
fn quick_boxed_at(s: &str, after: usize) -> Option<&str> {
    let b = s.as_bytes();
    if b.get(after) != Some(&b'{') {
        return None;
    }
    matching_brace(b, after).map(|close| &s[after + 1..close])
}

// ------------------------------------------------------------------------------------------------
// Normalization

/// Commands whose argument is kept and whose name is dropped.
const UNWRAP: [&str; 12] = [
    "\\boxed",
    "\\fbox",
    "\\textbf",
    "\\textrm",
    "\\textit",
    "\\textnormal",
    "\\text",
    "\\mbox",
    "\\mathrm",
    "\\mathbf",
    "\\mathit",
    "\\operatorname",
];

/// Removed everywhere (spacing, sizing, decorations that do not change the value).
const REMOVE: [&str; 22] = [
    "\\left",
    "\\right",
    "\\displaystyle",
    "\\!",
    "\\,",
    "\\;",
    "\\:",
    "\\ ",
    "\\qquad",
    "\\quad",
    "^{\\circ}",
    "^\\circ",
    "\\circ",
    "°",
    "\\$",
    "\\ldots",
    "\\dots",
    "{,}",
    "\\(",
    "\\)",
    "\\[",
    "\\]",
];

/// Unit words dropped at the end of an answer that has a value before them.
const UNITS: [&str; 62] = [
    "square",
    "sq",
    "cubic",
    "ways",
    "way",
    "integers",
    "dollars",
    "dollar",
    "mph",
    "inches",
    "inch",
    "in",
    "hours",
    "hour",
    "hr",
    "km",
    "units",
    "unit",
    "points",
    "point",
    "feet",
    "foot",
    "ft",
    "minutes",
    "minute",
    "min",
    "seconds",
    "second",
    "sec",
    "digits",
    "cents",
    "cent",
    "degrees",
    "degree",
    "cm",
    "mm",
    "m",
    "gm",
    "g",
    "kg",
    "pounds",
    "pound",
    "lbs",
    "meters",
    "meter",
    "miles",
    "mile",
    "meals",
    "edges",
    "students",
    "people",
    "days",
    "day",
    "weeks",
    "years",
    "months",
    "multiples",
    "th",
    "st",
    "nd",
    "rd",
    "childrentickets",
];

/// A normalized answer: its canonical string and whether it carried a percent sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// Canonical form (no spaces, `\frac{a}{b}` spelled out, units and wrappers removed).
    pub canon: String,
    /// The answer had `%` / `\%` (removed from `canon`).
    pub percent: bool,
}

fn replace_all(s: &str, pats: &[&str], with: &str) -> String {
    let b = s.as_bytes();
    // Only positions whose byte starts some pattern are tried.
    let mut first = [false; 256];
    for p in pats {
        first[usize::from(p.as_bytes()[0])] = true;
    }
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if first[usize::from(b[i])] {
            if let Some(p) = pats.iter().find(|p| b[i..].starts_with(p.as_bytes())) {
                out.push_str(&s[last..i]);
                out.push_str(with);
                i += p.len();
                last = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    out
}

/// Replaces `\cmd{X}` by ` X ` for the commands in [`UNWRAP`] (`\text{and}` by `,`); linear.
fn unwrap_commands(s: &str) -> String {
    let m = brace_matches(s);
    let b = s.as_bytes();
    let mut drop_close = vec![false; b.len()];
    let mut out = String::with_capacity(s.len() + 8);
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(cmd) = UNWRAP.iter().find(|c| {
                s[i..].starts_with(**c)
                    && b.get(i + c.len()) == Some(&b'{')
                    && m[i + c.len()] != usize::MAX
            }) {
                let open = i + cmd.len();
                let close = m[open];
                out.push_str(&s[last..i]);
                if py_strip(&s[open + 1..close]) == "and" {
                    out.push(',');
                    i = close + 1;
                    last = i;
                    continue;
                }
                out.push(' ');
                drop_close[close] = true;
                i = open + 1;
                last = i;
                continue;
            }
        }
        if b[i] == b'}' && drop_close[i] {
            out.push_str(&s[last..i]);
            out.push(' ');
            i += 1;
            last = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    out
}

/// Drops trailing unit words (`5 square units`, `12 cm^2`) when a value remains before them.
fn drop_units(s: &str) -> &str {
    let s = py_strip(s);
    // A power left alone by an unwrapped `\text{ cm}^2`: it goes with the unit before it.
    for pow in ["^2", "^3", "^{2}", "^{3}"] {
        if let Some(head) = s.strip_suffix(pow) {
            let head = py_strip(head);
            let dropped = drop_unit_words(head);
            if dropped.len() < head.len() {
                return dropped;
            }
        }
    }
    drop_unit_words(s)
}

fn drop_unit_words(s: &str) -> &str {
    let mut s = py_strip(s);
    // Bounded: hostile inputs ("5 m m m ...") must stay linear.
    for _ in 0..4 {
        let Some(cut) = s.rfind(is_py_space) else {
            return s;
        };
        let word = &s[cut..].trim_start_matches(is_py_space);
        let word = word.trim_end_matches('.');
        let base = word
            .strip_suffix("^2")
            .or_else(|| word.strip_suffix("^3"))
            .or_else(|| word.strip_suffix("^{2}"))
            .or_else(|| word.strip_suffix("^{3}"))
            .unwrap_or(word);
        if !UNITS.iter().any(|u| base.eq_ignore_ascii_case(u)) {
            return s;
        }
        let rest = py_strip(&s[..cut]);
        let ends_value = rest
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '}' | ')' | ']' | '.'))
            || UNITS.iter().any(|u| {
                rest.rsplit(is_py_space)
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case(u))
            });
        if rest.is_empty() || !ends_value {
            return s;
        }
        s = rest;
    }
    s
}

/// `\frac12` -> `\frac{1}{2}`, `\frac1{2}`, `\frac{1}2`, `\sqrt3` -> `\sqrt{3}`; one pass with the
/// brace table (spaces already removed).
fn brace_shorthands(s: &str) -> String {
    let m = brace_matches(s);
    let b = s.as_bytes();
    // wrap_at[i]: the single character at i is a group that needs braces.
    let mut wrap_at = vec![false; b.len() + 1];
    let mut out = String::with_capacity(s.len() + 16);
    let group_end = |at: usize| -> Option<usize> {
        // End (exclusive) of the group starting at `at`, or None when there is none.
        match b.get(at)? {
            b'{' => (m[at] != usize::MAX).then(|| m[at] + 1),
            b'\\' | b'}' => None,
            _ => Some(at + s[at..].chars().next()?.len_utf8()),
        }
    };
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' && s[i..].starts_with("\\frac") {
            let g1 = i + 5;
            if let Some(e1) = group_end(g1) {
                if b[g1] != b'{' {
                    wrap_at[g1] = true;
                }
                if let Some(g2_end) = group_end(e1) {
                    if b[e1] != b'{' {
                        wrap_at[e1] = true;
                    }
                    let _ = g2_end;
                }
            }
        } else if b[i] == b'\\' && s[i..].starts_with("\\sqrt") {
            let g = i + 5;
            if b.get(g).is_some_and(|&c| c != b'{' && c != b'[') && group_end(g).is_some() {
                wrap_at[g] = true;
            }
        }
        if wrap_at[i] {
            let len = s[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&s[last..i]);
            out.push('{');
            out.push_str(&s[i..i + len]);
            out.push('}');
            i += len;
            last = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    out
}

/// True for a "variable" on the left of `x = 3`: a letter, a letter with a digit or subscript, or
/// a Greek-letter command (`\alpha`).
fn is_variable(lhs: &str) -> bool {
    let lhs = lhs.trim_matches(is_py_space);
    let mut chars = lhs.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() => {
            let rest = chars.as_str();
            rest.is_empty()
                || (rest.len() == 1 && rest.as_bytes()[0].is_ascii_alphanumeric())
                || (rest.starts_with('_') && rest.len() <= 6 && !rest.contains(['=', ',']))
                || rest == "'"
        }
        Some('\\') => {
            let name = chars.as_str();
            !name.is_empty() && name.len() <= 8 && name.chars().all(|c| c.is_ascii_alphabetic())
        }
        _ => false,
    }
}

/// Drops a short `x =` (or `x \in`) prefix.
fn drop_assignment(s: &str) -> &str {
    if s.matches('=').count() == 1 {
        let (lhs, rhs) = s.split_once('=').unwrap_or((s, ""));
        if is_variable(lhs) && !py_strip(rhs).is_empty() {
            return rhs;
        }
    }
    if let Some(k) = s.find("\\in") {
        let after = &s[k + 3..];
        if is_variable(&s[..k]) && !after.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return after;
        }
    }
    s
}

/// `1,234,567` (whole string, groups of three) -> `1234567`.
fn drop_thousands(s: &str) -> String {
    if is_thousands(s.as_bytes()) {
        s.replace(',', "")
    } else {
        s.to_string()
    }
}

/// The whole string is a number with thousands separators: an optional sign, 1 to 3 digits,
/// groups of 3 digits after commas, an optional decimal part.
fn is_thousands(s: &[u8]) -> bool {
    let body = match s.first() {
        Some(b'-' | b'+') => &s[1..],
        _ => s,
    };
    let dot = body.iter().position(|&c| c == b'.');
    let (int, frac) = dot.map_or((body, &[][..]), |d| (&body[..d], &body[d + 1..]));
    let mut groups = int.split(|&c| c == b',');
    let first = groups.next().unwrap_or_default();
    let mut rest = 0;
    let digits = |g: &[u8]| g.iter().all(u8::is_ascii_digit);
    (1..=3).contains(&first.len())
        && digits(first)
        && groups.all(|g| {
            rest += 1;
            g.len() == 3 && digits(g)
        })
        && rest > 0
        && digits(frac)
}

/// Canonical form of an answer string (see the module docs for the rules).
pub fn normalize_math(answer: &str) -> Normalized {
    let mut short = Short::new();
    if fast_canon(answer, &mut short).is_some() {
        return Normalized {
            canon: short.as_str().to_owned(),
            percent: false,
        };
    }
    normalize_general(answer)
}

/// [`normalize_math`] by the general passes, for any answer.
fn normalize_general(answer: &str) -> Normalized {
    // Plain numbers skip the LaTeX passes, which would not change them.
    let simple = |c: u8| matches!(c, b'0'..=b'9' | b'+' | b'-' | b'.' | b'/' | b',' | b' ');
    if answer.bytes().all(simple) {
        return finish(&answer.replace(",,", ","), false);
    }
    let s = answer.replace(['\n', '\r'], " ").replace('\u{2212}', "-");
    let s = replace_all(&s, &["\\dfrac", "\\tfrac"], "\\frac");
    let s = replace_all(&s, &REMOVE, "");
    let percent = s.contains('%');
    let s = replace_all(&s, &["\\%", "%", "$"], "");
    let s = if s.contains('\\') {
        unwrap_commands(&s)
    } else {
        s
    };
    let s = s.replace(",,", ",");
    let s = drop_units(&s);
    let s = drop_assignment(s);
    finish(s, percent)
}

/// Longest answer the fast path takes (its buffers live on the stack).
const SHORT_MAX: usize = 96;
/// Room for the fast path's steps: shorthands and leading zeros only add characters (and a
/// string that outgrows it goes to the general passes).
const SHORT_CAP: usize = 2 * SHORT_MAX;

/// A short ASCII string built on the stack by [`fast_canon`].
struct Short {
    len: usize,
    buf: [u8; SHORT_CAP],
}

impl Short {
    fn new() -> Self {
        Self {
            len: 0,
            buf: [0; SHORT_CAP],
        }
    }

    fn push(&mut self, c: u8) -> Option<()> {
        *self.buf.get_mut(self.len)? = c;
        self.len += 1;
        Some(())
    }

    fn extend(&mut self, s: &[u8]) -> Option<()> {
        self.buf
            .get_mut(self.len..self.len + s.len())?
            .copy_from_slice(s);
        self.len += s.len();
        Some(())
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn as_str(&self) -> &str {
        // Only ASCII bytes are ever pushed, so this never falls back.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| c != b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|&c| c != b' ').map_or(start, |e| e + 1);
    &s[start..end]
}

/// `s` contains the two bytes `pair` side by side.
fn contains(s: &[u8], pair: &[u8; 2]) -> bool {
    s.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1])
}

/// The fast path of [`normalize_math`]: the canonical form of a short answer made of numbers,
/// fractions, tuples, intervals and sets (with `\left` / `\right`, `\dfrac`, spaces, an `x =`
/// prefix), written into `out` without allocating. `None` for anything else, which the general
/// passes then take.
///
/// Wherever it answers, it answers exactly `normalize_general(answer)` (with no percent sign):
/// each step below is a general pass restricted to these characters, and the characters it
/// refuses are the ones the passes it skips would act on (units and `\text` need letters, `$`,
/// `%`, `^\circ`, `\,` and the other removed commands need their own characters). The
/// `fast_path_equals_general` test checks this on random strings.
fn fast_canon(answer: &str, out: &mut Short) -> Option<()> {
    let a = answer.as_bytes();
    if a.len() > SHORT_MAX {
        return None;
    }
    // `\dfrac` / `\tfrac` -> `\frac`; `\left` / `\right` dropped (the only removed commands these
    // characters can spell); a backslash before anything else is not for this path.
    let mut s1 = Short::new();
    // Letters outside the commands: where the first one is, and how many.
    let (mut letter_at, mut letters) = (0, 0);
    let mut i = 0;
    while i < a.len() {
        let c = a[i];
        if c == b'\\' {
            let rest = &a[i + 1..];
            let (skip, keep): (usize, &[u8]) = if rest.starts_with(b"left") {
                (5, b"")
            } else if rest.starts_with(b"right") {
                (6, b"")
            } else if rest.starts_with(b"frac") {
                (5, b"\\frac")
            } else if rest.starts_with(b"dfrac") || rest.starts_with(b"tfrac") {
                (6, b"\\frac")
            } else if matches!(rest.first(), Some(b'{' | b'}')) {
                (2, &a[i..i + 2])
            } else {
                return None;
            };
            s1.extend(keep)?;
            i += skip;
            continue;
        }
        if c.is_ascii_alphabetic() {
            letter_at = s1.len;
            letters += 1;
        } else if !(c.is_ascii_digit() || b"+-./,()[]{}= ".contains(&c)) {
            return None;
        }
        s1.push(c)?;
        i += 1;
    }
    let s1 = s1.as_bytes();
    let lead = s1.iter().take_while(|&&c| c == b' ').count();
    let s1 = trim_spaces(s1);
    // `,,` and `{,}` are rewritten by the general passes.
    if contains(s1, b",,") || contains(s1, b"{,") {
        return None;
    }
    let equals = s1.iter().filter(|&&c| c == b'=').count();
    // Letters: only a one-letter variable before the one `=`, dropped (`x = 3`).
    let body = match (letters, equals) {
        (0, 0) => s1,
        (1, 1) if letter_at == lead => {
            let rhs = trim_spaces(&s1[1..]).strip_prefix(b"=")?;
            if trim_spaces(rhs).is_empty() {
                return None;
            }
            rhs
        }
        _ => return None,
    };
    // Strip, trailing dots, then spaces go (a spaced mixed number `3 1/2` is the general path's).
    let body = trim_spaces(body);
    let end = body.iter().rposition(|&c| c != b'.').map_or(0, |e| e + 1);
    let body = &body[..end];
    if is_mixed_spaced(body) {
        return None;
    }
    let mut compact = Short::new();
    for &c in body.iter().filter(|&&c| c != b' ') {
        compact.push(c)?;
    }
    let compact = compact.as_bytes();
    if compact.is_empty() || contains(compact, b",,") {
        return None;
    }
    // `\frac12` -> `\frac{1}{2}`.
    let mut braced = Short::new();
    let c = if compact.contains(&b'\\') {
        brace_shorthands_short(compact, &mut braced)?;
        braced.as_bytes()
    } else {
        compact
    };
    // Thousands separators, then `.5` -> `0.5`, then trailing dots.
    let mut plain = Short::new();
    let c = if is_thousands(c) {
        for &x in c.iter().filter(|&&x| x != b',') {
            plain.push(x)?;
        }
        plain.as_bytes()
    } else {
        c
    };
    let mut prev: Option<u8> = None;
    for (j, &x) in c.iter().enumerate() {
        if x == b'.'
            && c.get(j + 1).is_some_and(u8::is_ascii_digit)
            && prev.is_none_or(|p| b"{([,-+/".contains(&p))
        {
            out.push(b'0')?;
        }
        out.push(x)?;
        prev = Some(x);
    }
    while out.len > 0 && out.buf[out.len - 1] == b'.' {
        out.len -= 1;
    }
    (out.len > 0).then_some(())
}

/// [`mixed_spaced`] would rewrite `s` (spaces are its only whitespace).
fn is_mixed_spaced(s: &[u8]) -> bool {
    let Some(space) = s.iter().position(|&c| c == b' ') else {
        return false;
    };
    let (whole, frac) = (&s[..space], trim_spaces(&s[space + 1..]));
    let Some(slash) = frac.iter().position(|&c| c == b'/') else {
        return false;
    };
    let digits = |t: &[u8]| !t.is_empty() && t.iter().all(u8::is_ascii_digit);
    let w = match whole.first() {
        Some(b'-' | b'+') => &whole[1..],
        _ => whole,
    };
    digits(w) && digits(&frac[..slash]) && digits(&frac[slash + 1..])
}

/// [`brace_shorthands`] of a short string without spaces, into `out`.
fn brace_shorthands_short(s: &[u8], out: &mut Short) -> Option<()> {
    let mut wrap = [false; SHORT_CAP];
    let group_end = |at: usize| -> Option<usize> {
        match s.get(at)? {
            b'{' => matching_brace(s, at).map(|close| close + 1),
            b'\\' | b'}' => None,
            _ => Some(at + 1),
        }
    };
    for i in 0..s.len() {
        if s[i..].starts_with(b"\\frac") {
            let g1 = i + 5;
            if let Some(e1) = group_end(g1) {
                if s[g1] != b'{' {
                    wrap[g1] = true;
                }
                if group_end(e1).is_some() && s[e1] != b'{' {
                    wrap[e1] = true;
                }
            }
        }
    }
    for (i, &c) in s.iter().enumerate() {
        if wrap[i] {
            out.extend(&[b'{', c, b'}'])?;
        } else {
            out.push(c)?;
        }
    }
    Some(())
}

/// The passes shared by every answer: mixed numbers, spaces, shorthands, thousands, `.5`.
fn finish(s: &str, percent: bool) -> Normalized {
    let s = py_strip(s).trim_end_matches('.');
    // `3 1/2` is a mixed number: keep it apart from `31/2` before spaces go.
    let mixed = mixed_spaced(s);
    let s: String = mixed
        .as_deref()
        .unwrap_or(s)
        .chars()
        .filter(|&c| !is_py_space(c))
        .collect();
    let s = if s.contains('\\') {
        brace_shorthands(&s)
    } else {
        s
    };
    let s = drop_thousands(&s);
    let s = leading_zero(&s);
    Normalized {
        canon: s.trim_end_matches('.').to_string(),
        percent,
    }
}

/// `3 1/2` -> `3\frac{1}{2}` (integer, spaces, integer/integer; nothing else).
fn mixed_spaced(s: &str) -> Option<String> {
    let (whole, frac) = s.split_once(is_py_space)?;
    let frac = py_strip(frac);
    let (a, b) = frac.split_once('/')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
    let w = whole.strip_prefix(['-', '+']).unwrap_or(whole);
    (digits(w) && digits(a) && digits(b)).then(|| format!("{whole}\\frac{{{a}}}{{{b}}}"))
}

/// `.5` -> `0.5` at the start and after `{`, `(`, `[`, `,`, `-`, `+`, `/`.
fn leading_zero(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut prev: Option<char> = None;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '.'
            && chars.peek().is_some_and(char::is_ascii_digit)
            && prev.is_none_or(|p| matches!(p, '{' | '(' | '[' | ',' | '-' | '+' | '/'))
        {
            out.push('0');
        }
        out.push(c);
        prev = Some(c);
    }
    out
}

// ------------------------------------------------------------------------------------------------
// Values

/// An exact rational `num / den`, `den > 0`, reduced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rational {
    num: i128,
    den: i128,
}

/// Stein's binary gcd (shifts and subtractions) on one unsigned integer type.
macro_rules! binary_gcd {
    ($a:expr, $b:expr) => {{
        let (mut a, mut b) = ($a, $b);
        if a == 0 || b == 0 {
            a | b
        } else {
            let shift = (a | b).trailing_zeros();
            a >>= a.trailing_zeros();
            loop {
                b >>= b.trailing_zeros();
                if a > b {
                    std::mem::swap(&mut a, &mut b);
                }
                b -= a;
                if b == 0 {
                    break a << shift;
                }
            }
        }
    }};
}

fn gcd(a: i128, b: i128) -> i128 {
    let (a, b) = (a.unsigned_abs(), b.unsigned_abs());
    if a == 1 || b == 1 {
        return 1;
    }
    let g = match (u64::try_from(a), u64::try_from(b)) {
        // Nearly always: 64-bit words, no 128-bit division calls.
        (Ok(a), Ok(b)) => u128::from(binary_gcd!(a, b)),
        _ => binary_gcd!(a, b),
    };
    // At most max(|a|, |b|), and no Rational holds i128::MIN.
    i128::try_from(g).unwrap_or(i128::MAX)
}

/// `a / d` for a divisor `d >= 1`, in 64 bits when both fit.
fn div_by(a: i128, d: i128) -> i128 {
    match (i64::try_from(a), i64::try_from(d)) {
        (Ok(a), Ok(d)) => i128::from(a / d),
        _ => a / d,
    }
}

/// `a * b`, None on overflow; a plain multiplication when both fit 64 bits.
fn mul(a: i128, b: i128) -> Option<i128> {
    match (i64::try_from(a), i64::try_from(b)) {
        (Ok(a), Ok(b)) => Some(i128::from(a) * i128::from(b)),
        _ => a.checked_mul(b),
    }
}

impl Rational {
    fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 || num == i128::MIN || den == i128::MIN {
            return None;
        }
        if den == 1 {
            // Integers, the common case: already reduced.
            return Some(Self { num, den });
        }
        let g = gcd(num, den).max(1);
        let (mut n, mut d) = (div_by(num, g), div_by(den, g));
        if d < 0 {
            n = n.checked_neg()?;
            d = d.checked_neg()?;
        }
        Some(Self { num: n, den: d })
    }

    fn div(self, o: Self) -> Option<Self> {
        let g1 = gcd(self.num, o.num).max(1);
        let g2 = gcd(self.den, o.den).max(1);
        let n = mul(div_by(self.num, g1), div_by(o.den, g2))?;
        let d = mul(div_by(self.den, g2), div_by(o.num, g1))?;
        Self::new(n, d)
    }

    fn add(self, o: Self) -> Option<Self> {
        let n = self
            .num
            .checked_mul(o.den)?
            .checked_add(o.num.checked_mul(self.den)?)?;
        Self::new(n, self.den.checked_mul(o.den)?)
    }

    fn neg(self) -> Option<Self> {
        Some(Self {
            num: self.num.checked_neg()?,
            den: self.den,
        })
    }

    /// An unsigned decimal `12`, `12.`, `0.5`, `12.50` (digits only; no exponent).
    fn parse_unsigned_decimal(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        let (int, frac) = match b.iter().position(|&c| c == b'.') {
            Some(dot) => (&b[..dot], &b[dot + 1..]),
            None => (b, &[][..]),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.iter().all(u8::is_ascii_digit) || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let frac = &frac[..frac.iter().rposition(|&c| c != b'0').map_or(0, |p| p + 1)];
        let int = &int[int.iter().position(|&c| c != b'0').unwrap_or(int.len())..];
        if int.len() + frac.len() > 36 {
            return None;
        }
        // At most 36 digits: always fits an i128.
        let num = int
            .iter()
            .chain(frac)
            .fold(0i128, |n, &c| n * 10 + i128::from(c - b'0'));
        let den = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        Self::new(num, den)
    }

    fn parse_signed_decimal(s: &str) -> Option<Self> {
        if let Some(rest) = s.strip_prefix('-') {
            Self::parse_unsigned_decimal(rest)?.neg()
        } else {
            Self::parse_unsigned_decimal(s.strip_prefix('+').unwrap_or(s))
        }
    }
}

/// `\frac{A}{B}` with plain signed decimals A and B (the whole string).
fn parse_frac(s: &str) -> Option<(Rational, usize)> {
    let rest = s.strip_prefix("\\frac{")?;
    let (a, rest) = rest.split_once('}')?;
    let rest = rest.strip_prefix('{')?;
    let (b, _) = rest.split_once('}')?;
    let used = "\\frac{".len() + a.len() + 2 + b.len() + 1;
    let v = Rational::parse_signed_decimal(a)?.div(Rational::parse_signed_decimal(b)?)?;
    Some((v, used))
}

/// Byte index of the first `\frac{` in `s`.
fn find_frac(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(k) = memchr::memchr(b'\\', &b[i..]) {
        i += k;
        if b[i..].starts_with(b"\\frac{") {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// A number: signed decimal, `a/b`, `\frac{a}{b}`, `-\frac{a}{b}`, mixed `3\frac{1}{2}`.
pub fn parse_number(s: &str) -> Option<Rational> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let v = if let Some(v) = Rational::parse_unsigned_decimal(body) {
        v
    } else if let Some((v, used)) = parse_frac(body) {
        (used == body.len()).then_some(v)?
    } else if let Some(k) = find_frac(body) {
        // Mixed number: an integer immediately followed by a proper fraction.
        let whole = &body[..k];
        if whole.is_empty() || !whole.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let (f, used) = parse_frac(&body[k..])?;
        if k + used != body.len() || f.num < 0 {
            return None;
        }
        Rational::parse_unsigned_decimal(whole)?.add(f)?
    } else if let Some((a, b)) = body.split_once('/') {
        let a = Rational::parse_signed_decimal(a)?;
        let b = Rational::parse_signed_decimal(b)?;
        a.div(b)?
    } else {
        return None;
    };
    if neg {
        v.neg()
    } else {
        Some(v)
    }
}

/// A value the fast path can compare.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Number(Rational),
    /// Anything else, compared by its canonical string.
    Atom(String),
    /// `(a, b)`, `[a, b)`, ... : the bracket characters and the elements, in order.
    Tuple(char, char, Vec<Value>),
    /// `\{a, b\}`: unordered.
    Set(Vec<Value>),
    /// `a, b` without brackets: ordered.
    List(Vec<Value>),
}

/// True when `s` has a top-level comma (`split_top(s).len() > 1`, without building the parts).
fn has_top_comma(s: &str) -> bool {
    let mut depth: i64 = 0;
    for c in s.bytes() {
        match c {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => depth -= 1,
            b',' if depth == 0 => return true,
            _ => {}
        }
    }
    false
}

/// Splits at top-level commas (outside `{}`, `()`, `[]`).
fn split_top(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth: i64 = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' | '(' | '[' => depth += 1,
            '}' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

const MAX_DEPTH: usize = 4;
const MAX_ELEMENTS: usize = 256;

fn parse_value(s: &str, depth: usize) -> Value {
    let atom = || Value::Atom(s.to_string());
    if depth > MAX_DEPTH {
        return atom();
    }
    let elements = |inner: &str| -> Option<Vec<Value>> {
        let parts = split_top(inner);
        if parts.len() > MAX_ELEMENTS || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(
            parts
                .into_iter()
                .map(|p| parse_value(drop_assignment(p), depth + 1))
                .collect(),
        )
    };
    if let Some(inner) = s.strip_prefix("\\{").and_then(|r| r.strip_suffix("\\}")) {
        return elements(inner).map_or_else(atom, Value::Set);
    }
    let (first, last) = (s.chars().next(), s.chars().last());
    if let (Some(o @ ('(' | '[')), Some(c @ (')' | ']'))) = (first, last) {
        let inner = &s[1..s.len() - 1];
        if has_top_comma(inner) {
            return elements(inner).map_or_else(atom, |v| Value::Tuple(o, c, v));
        }
        if o == '(' && c == ')' {
            // Plain parentheses around one value: `(3)`.
            return parse_value(inner, depth + 1);
        }
    }
    if has_top_comma(s) {
        return elements(s).map_or_else(atom, Value::List);
    }
    parse_number(s).map_or_else(atom, Value::Number)
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y,
        (Value::Atom(x), Value::Atom(y)) => x == y,
        (Value::Tuple(o1, c1, x), Value::Tuple(o2, c2, y)) => {
            o1 == o2 && c1 == c2 && all_equal(x, y)
        }
        (Value::List(x), Value::List(y)) => all_equal(x, y),
        (Value::Set(x), Value::Set(y)) => {
            // Multiset equality by matching (sets are short; MAX_ELEMENTS bounds the work).
            if x.len() != y.len() {
                return false;
            }
            let mut used = vec![false; y.len()];
            x.iter().all(|e| {
                let hit = (0..y.len()).find(|&j| !used[j] && values_equal(e, &y[j]));
                hit.map(|j| used[j] = true).is_some()
            })
        }
        _ => false,
    }
}

fn all_equal(x: &[Value], y: &[Value]) -> bool {
    x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b))
}

/// Equivalence of two normalized answers. With `percent`, an answer with a percent sign also
/// equals its value divided by 100 (`50\%` == `0.5`).
pub fn normalized_equal(p: &Normalized, g: &Normalized, percent: bool) -> bool {
    if p.canon.is_empty() || g.canon.is_empty() {
        return false;
    }
    if p.canon == g.canon {
        return true;
    }
    let (vp, vg) = (parse_value(&p.canon, 0), parse_value(&g.canon, 0));
    values_equal(&vp, &vg) || percent_equal(p.percent, &vp, g.percent, &vg, percent)
}

/// `50\%` == `0.5` (only with the `percent` option, and only between plain numbers).
fn percent_equal(pp: bool, vp: &Value, gp: bool, vg: &Value, percent: bool) -> bool {
    if percent && pp != gp {
        if let (Value::Number(x), Value::Number(y)) = (vp, vg) {
            let hundred = Rational { num: 100, den: 1 };
            let (pc, other) = if pp { (x, y) } else { (y, x) };
            return pc.div(hundred).is_some_and(|v| v == *other);
        }
    }
    false
}

/// True when `pred` and `gold` (answer strings, not whole responses) are equivalent.
pub fn math_equal(pred: &str, gold: &str, percent: bool) -> bool {
    normalized_equal(&normalize_math(pred), &normalize_math(gold), percent)
}

/// Most elements a [`Flat`] value holds.
const FLAT_MAX: usize = 8;

/// The container of a [`Flat`] value (see [`Value`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Number,
    Tuple(u8, u8),
    Set,
    List,
}

/// What [`parse_value`] gives for a number, or for a tuple, set or list of up to [`FLAT_MAX`]
/// numbers (nearly every answer), built on the stack: a prediction is parsed once per distinct
/// answer, and the allocations of a [`Value`] were half of that.
#[derive(Debug, Clone, Copy)]
struct Flat {
    shape: Shape,
    len: usize,
    items: [Rational; FLAT_MAX],
}

impl Flat {
    fn numbers(&self) -> &[Rational] {
        &self.items[..self.len]
    }
}

/// [`parse_value`]`(s, 0)` when that is a number or a flat container of numbers; `None` for
/// anything else (nesting, atoms, `x = ` inside elements, more than [`FLAT_MAX`] elements),
/// which then takes [`parse_value`]. Each step mirrors a branch of [`parse_value`] in its order.
fn parse_flat(s: &str) -> Option<Flat> {
    let zero = Rational { num: 0, den: 1 };
    let mut flat = Flat {
        shape: Shape::Number,
        len: 0,
        items: [zero; FLAT_MAX],
    };
    if let Some(inner) = s.strip_prefix("\\{").and_then(|r| r.strip_suffix("\\}")) {
        flat.shape = Shape::Set;
        return flat_elements(inner, flat);
    }
    let b = s.as_bytes();
    if let (Some(&o @ (b'(' | b'[')), Some(&c @ (b')' | b']'))) = (b.first(), b.last()) {
        let inner = &s[1..s.len() - 1];
        // Without a top-level comma it is `(x)` (a recursion) or an atom: not flat.
        if !has_top_comma(inner) {
            return None;
        }
        flat.shape = Shape::Tuple(o, c);
        return flat_elements(inner, flat);
    }
    if has_top_comma(s) {
        flat.shape = Shape::List;
        return flat_elements(s, flat);
    }
    flat.items[0] = parse_number(s)?;
    flat.len = 1;
    Some(flat)
}

/// The elements of [`parse_flat`]'s container: `inner` split at its top-level commas (as
/// [`split_top`] does), each a plain number.
fn flat_elements(inner: &str, mut flat: Flat) -> Option<Flat> {
    let b = inner.as_bytes();
    let mut depth: i64 = 0;
    let mut start = 0;
    for i in 0..=b.len() {
        let end = i == b.len();
        if !end {
            match b[i] {
                b'{' | b'(' | b'[' => depth += 1,
                b'}' | b')' | b']' => depth -= 1,
                _ => {}
            }
        }
        if end || (b[i] == b',' && depth == 0) {
            let part = &inner[start..i];
            // An empty part makes `parse_value` an atom; `=` or `\in` would go through
            // `drop_assignment`; a nested container never parses as a number.
            if part.is_empty()
                || flat.len == FLAT_MAX
                || part.contains('=')
                || part.contains("\\in")
            {
                return None;
            }
            flat.items[flat.len] = parse_number(part)?;
            flat.len += 1;
            start = i + 1;
        }
    }
    Some(flat)
}

/// `values_equal(parse_value(canon), g)` for a prediction whose parse is `f`.
fn flat_equal(f: &Flat, g: &Value) -> bool {
    let same = |ys: &[Value]| {
        ys.len() == f.len
            && f.numbers()
                .iter()
                .zip(ys)
                .all(|(x, y)| matches!(y, Value::Number(y) if x == y))
    };
    match (f.shape, g) {
        (Shape::Number, Value::Number(y)) => f.items[0] == *y,
        (Shape::Tuple(o, c), Value::Tuple(o2, c2, ys)) => {
            char::from(o) == *o2 && char::from(c) == *c2 && same(ys)
        }
        (Shape::List, Value::List(ys)) => same(ys),
        (Shape::Set, Value::Set(ys)) => {
            // The same greedy matching as `values_equal` (equality is transitive, so greedy
            // finds a matching whenever one exists).
            if ys.len() != f.len {
                return false;
            }
            let mut used = [false; FLAT_MAX];
            f.numbers().iter().all(|x| {
                let hit = (0..ys.len())
                    .find(|&j| !used[j] && matches!(&ys[j], Value::Number(y) if x == y));
                hit.map(|j| used[j] = true).is_some()
            })
        }
        _ => false,
    }
}

/// A gold answer normalized and parsed once, to be compared with many predictions.
#[derive(Debug, Clone)]
pub struct Gold {
    norm: Normalized,
    value: Value,
}

impl Gold {
    /// Normalizes and parses `gold`.
    pub fn new(gold: &str) -> Self {
        let norm = normalize_math(gold);
        let value = parse_value(&norm.canon, 0);
        Self { norm, value }
    }

    /// [`Self::equals`] for a fast-path prediction (no percent sign) whose [`parse_flat`] is
    /// `flat` (computed on first use, then shared across golds).
    fn equals_flat(&self, canon: &str, flat: &mut Option<Option<Flat>>, percent: bool) -> bool {
        if canon.is_empty() || self.norm.canon.is_empty() {
            return false;
        }
        if canon == self.norm.canon {
            return true;
        }
        let Some(f) = flat.get_or_insert_with(|| parse_flat(canon)) else {
            return false;
        };
        if flat_equal(f, &self.value) {
            return true;
        }
        // `percent_equal` with a prediction without `%`: the gold's value over 100.
        if percent && self.norm.percent && f.shape == Shape::Number {
            if let Value::Number(y) = &self.value {
                let hundred = Rational { num: 100, den: 1 };
                return y.div(hundred).is_some_and(|v| v == f.items[0]);
            }
        }
        false
    }

    /// [`normalized_equal`] of a prediction's canonical form and this gold; `value` caches the
    /// prediction's parse across golds.
    fn equals(&self, canon: &str, pp: bool, value: &mut Option<Value>, percent: bool) -> bool {
        if canon.is_empty() || self.norm.canon.is_empty() {
            return false;
        }
        if canon == self.norm.canon {
            return true;
        }
        let vp = value.get_or_insert_with(|| parse_value(canon, 0));
        values_equal(vp, &self.value)
            || percent_equal(pp, vp, self.norm.percent, &self.value, percent)
    }
}

/// Scores one response against its golds: `Some(true)` correct, `Some(false)` an answer that is
/// not equal, `None` no answer found.
pub fn judge_response<'a>(
    response: &str,
    golds: impl Iterator<Item = &'a Gold>,
    percent: bool,
) -> Option<bool> {
    Some(judge_answer(&find_math_answer(response)?, golds, percent))
}

/// True when an extracted answer (see [`find_math_answer`]) equals one of `golds`.
pub fn judge_answer<'a>(
    answer: &str,
    mut golds: impl Iterator<Item = &'a Gold>,
    percent: bool,
) -> bool {
    let mut value = None;
    let mut short = Short::new();
    if fast_canon(answer, &mut short).is_some() {
        let canon = short.as_str();
        let mut flat = None;
        let flat_or_value = |g: &Gold, flat: &mut Option<Option<Flat>>, value: &mut _| {
            // Not flat: the general parse, once.
            if g.equals_flat(canon, flat, percent) {
                return true;
            }
            matches!(flat, Some(None)) && g.equals(canon, false, value, percent)
        };
        return golds.any(|g| flat_or_value(g, &mut flat, &mut value));
    }
    let p = normalize_general(answer);
    golds.any(|g| g.equals(&p.canon, p.percent, &mut value, percent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction() {
        let e = |s: &str| extract_math_answer(s);
        assert_eq!(e("so\nFinal Answer: 42\nmore"), Some("42".into()));
        assert_eq!(
            e("final answer: 1\nFINAL ANSWER: $x = 3$."),
            Some("x = 3".into())
        );
        assert_eq!(
            e("Final Answer: The final answer is $7$. I hope it is correct."),
            Some("7".into())
        );
        assert_eq!(
            e("\\boxed{1} then \\boxed{\\frac{1}{2}}"),
            Some("\\frac{1}{2}".into())
        );
        assert_eq!(e("\\boxed{3} and \\boxed{4"), Some("3".into()));
        assert_eq!(
            e("<Summary>Final Answer: 5</Summary>junk"),
            Some("5".into())
        );
        assert_eq!(e("Final Answer:\n\n\\boxed{9}"), Some("9".into()));
        assert_eq!(e("nothing here"), None);
        assert_eq!(e("\\boxed{}"), None);
    }

    #[test]
    fn normalization_rules() {
        let n = |s: &str| normalize_math(s).canon;
        assert_eq!(n("\\left( 1, 2 \\right)"), "(1,2)");
        assert_eq!(n("\\dfrac12"), "\\frac{1}{2}");
        assert_eq!(n("\\tfrac{1}2"), "\\frac{1}{2}");
        assert_eq!(n("2\\sqrt3"), "2\\sqrt{3}");
        assert_eq!(n("90^\\circ"), "90");
        assert_eq!(n("\\$1,000.50"), "1000.50");
        assert_eq!(n("12 \\text{ cm}^2"), "12");
        assert_eq!(n("5 square units"), "5");
        assert_eq!(n("x = 3"), "3");
        assert_eq!(n("3x"), "3x");
        assert_eq!(n(".5"), "0.5");
        assert_eq!(n("\\textbf{(B)}"), "(B)");
        assert_eq!(n("3 1/2"), "3\\frac{1}{2}");
        assert!(normalize_math("50\\%").percent);
    }

    #[test]
    fn equivalences() {
        let eq = |a: &str, b: &str| math_equal(a, b, false);
        assert!(eq("0.5", "\\frac{1}{2}") && eq("1/2", "\\frac12") && eq("2/4", ".5"));
        assert!(eq("+007", "7") && eq("-\\frac{1}{2}", "\\frac{-1}{2}"));
        assert!(eq("3\\frac{1}{2}", "3.5") && eq("-3 1/2", "-7/2"));
        assert!(eq("(0.5, 1)", "(\\frac{1}{2},1)") && eq("\\{2,1\\}", "\\{1,2\\}"));
        assert!(eq("x=3", "3") && eq("50\\%", "50"));
        assert!(!eq("1/2", "2") && !eq("0.5", "0.05") && !eq("(1,2)", "(2,1)"));
        assert!(!eq("x=3", "3x") && !eq("[1,2)", "(1,2)") && !eq("", ""));
        assert!(!eq("50\\%", "0.5") && math_equal("50\\%", "0.5", true));
        assert!(eq("1/0", "1/0") && !eq("1/0", "2/0"));
    }

    /// Random strings over the characters and commands both paths care about.
    fn random_answers(n: usize, seed: u64, tokens: &[&str]) -> Vec<String> {
        let mut state = seed;
        let mut next = move |m: usize| {
            // xorshift64*: deterministic, no dependency.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % m
        };
        (0..n)
            .map(|_| {
                let len = 1 + next(10);
                (0..len).map(|_| tokens[next(tokens.len())]).collect()
            })
            .collect()
    }

    #[test]
    fn flat_parse_equals_parse_value() {
        // Canonical forms as the fast path writes them, and golds of every value shape.
        const TOKENS: [&str; 22] = [
            "0",
            "1",
            "2",
            "12",
            "-",
            "+",
            ".",
            "/",
            ",",
            ",",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            "\\{",
            "\\}",
            "\\frac{1}{2}",
            "\\frac{",
            "x=",
            "\\in",
        ];
        let mut forms = random_answers(60_000, 0x51_7cc1_b727_220a, &TOKENS);
        // Containers of numbers, the shapes answers mostly have.
        const NUMBERS: [&str; 10] = [
            "1",
            "2",
            "-1",
            "0.5",
            "1/2",
            "\\frac{1}{2}",
            "+2",
            "2.",
            "3",
            "",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for k in 0..10_000 {
            let body: Vec<&str> = (0..1 + k % 9)
                .map(|_| {
                    state = state
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1);
                    NUMBERS[(state >> 33) as usize % NUMBERS.len()]
                })
                .collect();
            let body = body.join(",");
            forms.push(match k % 5 {
                0 => format!("({body})"),
                1 => format!("[{body})"),
                2 => format!("\\{{{body}\\}}"),
                3 => body,
                _ => format!("({body}]"),
            });
        }
        let golds: Vec<Value> = forms
            .iter()
            .step_by(7)
            .map(|g| parse_value(g, 0))
            .chain(
                [
                    "1/2",
                    "(1,2)",
                    "[1,2)",
                    "\\{1,2,2\\}",
                    "\\{2,1,2\\}",
                    "1,2",
                    "(1,(2))",
                    "a",
                ]
                .iter()
                .map(|g| parse_value(g, 0)),
            )
            .collect();
        let mut flat_count = 0;
        let mut equal_count = 0;
        for (i, s) in forms.iter().enumerate() {
            let Some(f) = parse_flat(s) else { continue };
            flat_count += 1;
            let v = parse_value(s, 0);
            // The flat parse is the general one, element for element.
            let want = match f.shape {
                Shape::Number => Value::Number(f.items[0]),
                Shape::Tuple(o, c) => Value::Tuple(
                    char::from(o),
                    char::from(c),
                    f.numbers().iter().map(|&x| Value::Number(x)).collect(),
                ),
                Shape::Set => Value::Set(f.numbers().iter().map(|&x| Value::Number(x)).collect()),
                Shape::List => Value::List(f.numbers().iter().map(|&x| Value::Number(x)).collect()),
            };
            assert_eq!(v, want, "{s:?}");
            for g in golds
                .iter()
                .skip(i % 13)
                .step_by(13)
                .chain(&golds[golds.len() - 8..])
            {
                let eq = flat_equal(&f, g);
                assert_eq!(eq, values_equal(&v, g), "{s:?} vs {g:?}");
                equal_count += usize::from(eq);
            }
        }
        assert!(
            flat_count > 6_000 && equal_count > 500,
            "{flat_count} {equal_count}"
        );
        // Judging through the flat parse equals judging through parse_value, percent included.
        let gold_strings = [
            "50\\%",
            "0.5",
            "(1,2)",
            "\\{1,2\\}",
            "\\frac{1}{2}",
            "1,2",
            "x",
            "2%",
        ];
        let gs: Vec<Gold> = gold_strings.iter().map(|g| Gold::new(g)).collect();
        for s in forms
            .iter()
            .take(20_000)
            .chain(&["0.5".to_string(), "1/2".into(), "(2,1)".into()])
        {
            for percent in [false, true] {
                for g in &gs {
                    let mut short = Short::new();
                    let want = if fast_canon(s, &mut short).is_some() {
                        g.equals(short.as_str(), false, &mut None, percent)
                    } else {
                        let p = normalize_general(s);
                        g.equals(&p.canon, p.percent, &mut None, percent)
                    };
                    assert_eq!(
                        judge_answer(s, std::iter::once(g), percent),
                        want,
                        "{s:?} {g:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_path_equals_general() {
        const ANY: [&str; 60] = [
            "0", "1", "2", "3", "5", "9", "00", "12", ".", ".", "-", "+", "/", ",", ",", " ", " ",
            "  ", "(", ")", "[", "]", "{", "}", "\\{", "\\}", "\\frac", "\\frac", "\\dfrac",
            "\\tfrac", "\\left", "\\right", "x", "m", "=", " = ", "\\sqrt", "%", "\\%", "$", "^2",
            "\\text{", "cm", "\\,", "\\!", "\\in", "{,}", ",,", "\\\\", "\\lef", "e", "\n", "\t",
            "\u{2212}", "°", "^\\circ", "\\boxed{", ":", "1,000", "x=",
        ];
        // Mostly what the fast path takes, so that its edges get hit often.
        const NUMERIC: [&str; 24] = [
            "0", "1", "7", "12", ".", "-", "+", "/", ",", " ", "(", ")", "[", "]", "{", "}", "\\{",
            "\\}", "\\frac", "\\dfrac", "\\left", "\\right", "x", "=",
        ];
        let mut forms = random_answers(100_000, 0x9e37_79b9_7f4a_7c15, &ANY);
        forms.extend(random_answers(100_000, 0x2545_f491_4f6c_dd1d, &NUMERIC));
        // The shapes answers have in practice, in all their spellings.
        for a in [
            "5",
            "-5",
            "+005",
            "5.",
            "5.0",
            "1,234",
            "-1,234.50",
            ".5",
            "-.5",
            "1/2",
            "-3/4",
            "3/-4",
            "1/.5",
            "\\frac{1}{2}",
            "-\\frac{1}{2}",
            "\\frac{-1}{2}",
            "\\dfrac12",
            "\\tfrac{1}2",
            "3\\frac{1}{2}",
            "3\\frac12",
            "\\frac123",
            "\\frac1{2}",
            "(1, 2)",
            "\\left( 1, 2 \\right)",
            "[-3, .5)",
            "\\{1, 2, 3\\}",
            "\\left\\{ 1,2 \\right\\}",
            "x = 5",
            "x=\\frac{1}{2}",
            "y = (1, 2)",
            "x = 1,234",
            "(1,2) .",
            "5 .",
            "3 1/2",
            "x = 3 1/2",
            "(3)",
            "[3]",
            "\\frac{1}{0}",
            "1/0",
            "(1,2)(3,4)",
            "\\{\\}",
            "()",
            "\\frac{}{}",
            "\\frac",
            "\\frac{1",
            "-",
            ".",
            "x =",
            "= 5",
            "x = = 5",
            "\\leftx = 5",
        ] {
            forms.push(a.to_string());
        }
        // These must take the fast path.
        for a in [
            "5",
            "-5",
            "+005",
            "5.",
            "1,234",
            ".5",
            "-3/4",
            "\\frac{1}{2}",
            "-\\dfrac12",
            "3\\frac{1}{2}",
            "(1, 2)",
            "\\left( 1, 2 \\right)",
            "[-3, .5)",
            "\\{1, 2, 3\\}",
            "\\left\\{ 1,2 \\right\\}",
            "x = 5",
            "x = -\\tfrac25",
            "y = (1, 2)",
            "\\left[ \\frac{-30}{2} , 1\\frac{1}{2} \\right)",
        ] {
            assert!(fast_canon(a, &mut Short::new()).is_some(), "answer {a:?}");
        }
        let mut fast = 0;
        for a in &forms {
            let mut short = Short::new();
            if fast_canon(a, &mut short).is_some() {
                fast += 1;
                let general = normalize_general(a);
                assert_eq!(short.as_str(), general.canon, "answer {a:?}");
                assert!(!general.percent, "answer {a:?}");
            }
        }
        // The fast path must actually be taken, not only be right when it is.
        assert!(fast > forms.len() / 10, "{fast} of {}", forms.len());
        eprintln!("fast path: {fast} of {}", forms.len());
    }

    /// [`find_math_answer`] as first written: tags removed from a full copy, the `Final Answer:`
    /// key found by trying every `f`, lines split from the copy, the last box of the response
    /// found with `rfind` and a brace table.
    fn reference_answer(response: &str) -> Option<String> {
        let b = response.as_bytes();
        let key = (0..b.len()).rev().find_map(|i| {
            let k = b.get(i..i + 12)?;
            if !k.eq_ignore_ascii_case(b"final answer") {
                return None;
            }
            let j = i
                + 12
                + b[i + 12..]
                    .iter()
                    .take_while(|&&c| c == b' ' || c == b'*')
                    .count();
            (b.get(j) == Some(&b':')).then_some(j + 1)
        });
        if let Some(start) = key {
            let s = remove_tags(&response[start..]).into_owned();
            let mut rest = s.as_str();
            loop {
                let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
                let content = final_answer_content(line);
                if !py_strip(content).is_empty() {
                    return Some(py_strip(content).to_string());
                }
                if tail.is_empty() || !py_strip(line).is_empty() {
                    break;
                }
                rest = tail;
            }
        }
        let last = |cmd: &str| response.rfind(cmd).map(|i| i + cmd.len());
        let quick = last("\\boxed").max(last("\\fbox")).and_then(|after| {
            let m = brace_matches(response);
            (b.get(after) == Some(&b'{') && m[after] != usize::MAX)
                .then(|| &response[after + 1..m[after]])
        });
        let boxed = match quick {
            Some(content) => remove_tags(content).into_owned(),
            None => all_boxes_last(&remove_tags(response))?.to_string(),
        };
        let boxed = py_strip(&boxed);
        (!boxed.is_empty()).then(|| boxed.to_string())
    }

    #[test]
    fn extraction_equals_reference() {
        const PIECES: [&str; 34] = [
            "Final Answer:",
            "final answer :",
            "FINAL ANSWER**:",
            "Final Answer",
            "\n",
            "\n\n",
            "<think>",
            "</think>",
            "<Summary>",
            "</Summary>",
            "<|im_end|>",
            "<|{|>",
            "<",
            "|>",
            "\\boxed{",
            "\\boxed ",
            "\\fbox{",
            "\\boxed",
            "{",
            "}",
            "$",
            "$$",
            "1",
            "x = 2",
            " ",
            "The final answer is ",
            " I hope it is correct.",
            "*",
            ":",
            "f",
            "answer",
            "\\frac{1}{2}",
            "**",
            "text ",
        ];
        for (i, r) in random_answers(100_000, 0x51_7cc1_b727_220a, &PIECES)
            .iter()
            .enumerate()
        {
            let got = find_math_answer(r).map(Cow::into_owned);
            assert_eq!(got, reference_answer(r), "response {i}: {r:?}");
            // The last box alone, else all of them: the same box as trying all of them.
            assert_eq!(last_boxed(r), all_boxes_last(r), "response {i}: {r:?}");
        }
    }

    #[test]
    fn gcd_and_arithmetic_match_plain_i128() {
        let euclid = |mut a: i128, mut b: i128| {
            (a, b) = (a.abs(), b.abs());
            while b != 0 {
                (a, b) = (b, a % b);
            }
            a
        };
        let mut x: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834;
        for k in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Small, 64-bit and full 128-bit magnitudes, both signs.
            let shift = [120, 100, 64, 70, 20][k as usize % 5];
            let a = (x as i128) >> shift;
            let b = ((x >> 64) as i128 ^ (x as i128)) >> ((shift + 3) % 127);
            assert_eq!(gcd(a, b), euclid(a, b), "{a} {b}");
            let d = b.abs().max(1);
            assert_eq!(div_by(a, d), a / d);
            assert_eq!(mul(a, b), a.checked_mul(b));
        }
    }

    #[test]
    fn linear_on_hostile_input() {
        let deep = format!("\\boxed{{{}}}", "{".repeat(100_000) + &"}".repeat(100_000));
        let t = std::time::Instant::now();
        let a = extract_math_answer(&deep).unwrap();
        assert!(!math_equal(&a, "1", false));
        let fracs = "\\frac{".repeat(50_000) + &"1}{2}".repeat(50_000);
        assert!(!math_equal(&fracs, "1", false));
        let big = "Final Answer: ".to_string() + &"\\boxed{1".repeat(100_000);
        let _ = extract_math_answer(&big);
        assert!(t.elapsed().as_secs_f64() < 5.0);
    }
}
