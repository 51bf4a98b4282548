#![no_main]
//! Word expansion must never panic: the input is split into a word and a
//! few `NAME=value` variables (separated by NUL bytes), and both entry
//! points run with both escape characters.
use std::collections::HashMap;

use cairn_dockerfile::expand::{expand_word, expand_words, referenced_vars};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let word = parts.next().unwrap_or_default();
    let vars: HashMap<String, String> = parts
        .take(8)
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (pair.to_string(), String::new()),
        })
        .collect();
    for escape in ['\\', '`'] {
        let single = expand_word(word, &vars, escape);
        let split = expand_words(word, &vars, escape);
        // Both read the same word: they fail together.
        assert_eq!(single.is_ok(), split.is_ok(), "{word:?}");
        if let Err(err) = single {
            assert!(err.offset <= word.len());
            let _ = err.to_string();
        }
        let _ = referenced_vars(word, escape);
        // Text without `$`, quotes or escapes comes back unchanged.
        if !word.contains(['$', '\'', '"', escape]) {
            assert_eq!(expand_word(word, &vars, escape).as_deref(), Ok(word));
        }
    }
});
