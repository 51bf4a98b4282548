//! Entry names from a tar, cleaned before anything touches the disk.
//!
//! Policy: a leading `/` is dropped (absolute names are contained in the
//! destination, as GNU tar and Docker do); empty and `.` components are
//! dropped; a `..` component anywhere, a NUL byte, or a component longer than
//! NAME_MAX rejects the whole layer (no real image has them).

use crate::error::LayerError;

const NAME_MAX: usize = 255;

/// The cleaned relative path (`a/b/c`), or empty for the root itself.
pub(crate) fn clean(raw: &[u8]) -> Result<Vec<u8>, LayerError> {
    if raw.contains(&0) {
        return Err(LayerError::bad_entry(raw, "NUL byte in name"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(LayerError::bad_entry(raw, "`..` in name")),
            c if c.len() > NAME_MAX => {
                return Err(LayerError::bad_entry(
                    raw,
                    "path component longer than 255 bytes",
                ))
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// Split a cleaned path into (parent, last component).
pub(crate) fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_rejects() {
        assert_eq!(clean(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(clean(b"/etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(clean(b"./").unwrap(), b"");
        assert!(clean(b"../x").is_err());
        assert!(clean(b"a/../../x").is_err());
        assert!(clean(b"a/..").is_err());
        assert!(clean(b"a\0b").is_err());
        assert!(clean(&[b'x'; 256]).is_err());
        assert_eq!(split_last(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split_last(b"c"), (&b""[..], &b"c"[..]));
    }
}
