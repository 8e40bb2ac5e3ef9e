//! Character classes with Python's definitions, so that Rust and the Python references agree on
//! every string (`str.split()`, `re`'s `\b`, `string.punctuation`, `unicodedata.category`).

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// Python's `str.isspace()`: Rust's `char::is_whitespace` plus the four information separators
/// U+001C..U+001F, which `str.split()` also splits on.
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// A word character of Python's `re` on `str` patterns (`\w`): `str.isalnum()` or `_`.
pub fn is_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    matches!(
        get_general_category(c),
        G::UppercaseLetter
            | G::LowercaseLetter
            | G::TitlecaseLetter
            | G::ModifierLetter
            | G::OtherLetter
            | G::DecimalNumber
            | G::LetterNumber
            | G::OtherNumber
    )
}

/// Python's `string.punctuation` (the 32 ASCII punctuation characters).
pub fn is_ascii_punct(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// Unicode punctuation: general category P* (`unicodedata.category(c).startswith("P")`).
pub fn is_unicode_punct(c: char) -> bool {
    matches!(
        get_general_category(c),
        G::ConnectorPunctuation
            | G::DashPunctuation
            | G::OpenPunctuation
            | G::ClosePunctuation
            | G::InitialPunctuation
            | G::FinalPunctuation
            | G::OtherPunctuation
    )
}

/// `s.strip()` with Python's whitespace.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_classes() {
        assert!(is_py_space('\u{1f}') && is_py_space('\u{3000}') && !is_py_space('\u{200b}'));
        assert!(is_word('é') && is_word('_') && is_word('٣') && !is_word('€'));
        // A vowel sign is Alphabetic for Rust but not alnum for Python.
        assert!('\u{93e}'.is_alphabetic() && !is_word('\u{93e}'));
        assert!(is_ascii_punct('~') && !is_ascii_punct('«') && is_unicode_punct('«'));
        assert_eq!(py_strip("\u{1c} a b\u{a0}"), "a b");
    }
}
