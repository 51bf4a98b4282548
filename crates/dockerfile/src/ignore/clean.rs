//! Go's `path.Clean` (which is `filepath.Clean` with `/` separators).

/// The shortest path equivalent to `path` by lexical processing: repeated
/// slashes collapse, `.` elements go, `..` eats the element before it (or
/// is kept at the start of a relative path, dropped at the root), no
/// trailing slash; the empty path is `.`.
pub(super) fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut elements: Vec<&str> = Vec::new();
    for element in path.split('/') {
        match element {
            "" | "." => {}
            ".." => match elements.last() {
                Some(last) if *last != ".." => {
                    elements.pop();
                }
                // `/..` is `/`.
                _ if rooted => {}
                _ => elements.push(".."),
            },
            other => elements.push(other),
        }
    }
    let joined = elements.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn matches_go_path_clean() {
        let cases = [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("//", "/"),
            ("a/", "a"),
            ("./a", "a"),
            ("a/./b", "a/b"),
            ("a//b", "a/b"),
            ("a/../b", "b"),
            ("a/..", "."),
            ("../a", "../a"),
            ("../../a/..", "../.."),
            ("/../a", "/a"),
            ("/..", "/"),
            ("a/b/../../..", ".."),
            ("!../x", "!../x"),
            ("!/", "!"),
            ("é/./ü/", "é/ü"),
        ];
        for (input, expected) in cases {
            assert_eq!(clean_path(input), expected, "{input:?}");
        }
    }
}
