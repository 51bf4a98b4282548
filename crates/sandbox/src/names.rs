//! What a caller may use to select a sandbox: a generated id (24 lowercase
//! hex digits), a unique prefix of one, or a name given at create time.
//! These are looked up in the sandbox records, never joined onto a store
//! path as given: `..`, `/tmp/x` or an empty string select nothing.

/// Longest sandbox name or reference accepted (Docker allows container
/// names of any length; 128 keeps records and messages sane).
pub const MAX_LEN: usize = 128;

/// Length of a generated sandbox id.
pub const ID_LEN: usize = 24;

/// Why `value` cannot name a sandbox, or None when it can. Docker's rule for
/// container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn problem(value: &str) -> Option<&'static str> {
    let mut chars = value.chars();
    match chars.next() {
        None => Some("it is empty"),
        Some(_) if value.len() > MAX_LEN => Some("it is longer than 128 characters"),
        Some(c) if !c.is_ascii_alphanumeric() => Some("it must start with a letter or a digit"),
        Some(_) => chars
            .any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .then_some("only letters, digits and _ . - are allowed"),
    }
}

/// Whether `value` has the shape of a generated id (so it may name a sandbox
/// directory whose record is missing, after a create that died).
pub fn is_id(value: &str) -> bool {
    value.len() == ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_not_paths() {
        for bad in [
            "",
            ".",
            "..",
            "/tmp/x",
            "a/b",
            "../sandboxes",
            "-rf",
            " x",
            "a\0b",
        ] {
            assert!(problem(bad).is_some(), "{bad:?} accepted");
        }
        assert!(problem(&"a".repeat(129)).is_some());
        for good in ["dev", "web-1", "my_box.2", "0123456789abcdef01234567"] {
            assert_eq!(problem(good), None, "{good:?} refused");
        }
    }

    #[test]
    fn ids_are_24_lowercase_hex() {
        assert!(is_id("0123456789abcdef01234567"));
        assert!(!is_id("0123456789ABCDEF01234567"));
        assert!(!is_id("0123456789abcdef0123456"));
        assert!(!is_id(".."));
    }
}
