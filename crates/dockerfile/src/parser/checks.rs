//! Value checks BuildKit makes while parsing instructions: Go durations
//! (HEALTHCHECK), mount types (RUN --mount), and the "did you mean"
//! suggestion for unknown instructions.

/// Instruction names BuildKit suggests from, in a fixed order.
const INSTRUCTIONS: [&str; 18] = [
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// `unknown instruction: X`, with BuildKit's `(did you mean Y?)` when a
/// known name is within Levenshtein distance 2 (case-insensitive; the
/// suggestion takes the case of what was written).
pub(super) fn unknown_instruction(written: &str) -> String {
    let lower = written.to_lowercase();
    let mut best: Option<(&str, usize)> = None;
    for name in INSTRUCTIONS {
        let d = levenshtein(&lower, name);
        if d < best.map_or(3, |(_, bd)| bd) {
            best = Some((name, d));
        }
    }
    match best {
        Some((name, _)) if !lower.is_empty() => {
            let suggestion = if written == written.to_uppercase() {
                name.to_uppercase()
            } else {
                name.to_string()
            };
            format!("unknown instruction: {written} (did you mean {suggestion}?)")
        }
        _ => format!("unknown instruction: {written}"),
    }
}

/// Edit distance between two strings, by characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Go's `time.ParseDuration`, in nanoseconds (None when invalid).
pub(crate) fn go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let v = total as i128;
    Some(if neg { -v } else { v })
}

/// The one part of a `RUN --mount` spec checked here: a known mount type
/// (BuildKit checks the other keys too; those are left to the build).
pub(super) fn check_mount(spec: &str) -> Result<(), String> {
    let mut typ = "bind".to_string();
    for field in spec.split(',') {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        if key.trim().eq_ignore_ascii_case("type") {
            typ = value.trim().to_lowercase();
        }
    }
    match typ.as_str() {
        "bind" | "cache" | "tmpfs" | "secret" | "ssh" => Ok(()),
        // Expanded when the stage is dispatched; cannot be judged here.
        t if t.contains('$') => Ok(()),
        other => Err(format!("unsupported mount type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(go_duration("30s"), Some(30_000_000_000));
        assert_eq!(go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(go_duration("0"), Some(0));
        assert_eq!(go_duration("10"), None);
        assert_eq!(go_duration("abc"), None);
    }

    #[test]
    fn unknown_instruction_suggestions() {
        assert_eq!(
            unknown_instruction("FRON"),
            "unknown instruction: FRON (did you mean FROM?)"
        );
        assert_eq!(
            unknown_instruction("cpy"),
            "unknown instruction: cpy (did you mean copy?)"
        );
        assert_eq!(
            unknown_instruction("FOO"),
            "unknown instruction: FOO (did you mean FROM?)"
        );
        assert_eq!(unknown_instruction("XYZZY"), "unknown instruction: XYZZY");
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
