#![no_main]
//! `.dockerignore` parsing and matching must never panic: the input is the
//! file text, then a NUL, then paths separated by NULs.
use cairn_dockerfile::ignore::DockerIgnore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let patterns = parts.next().unwrap_or_default();
    let Ok(rules) = DockerIgnore::parse(patterns) else {
        return;
    };
    let paths: Vec<&str> = parts.take(8).collect();
    for dir in &paths {
        let excluded = rules.is_excluded(dir);
        if !rules.can_skip_dir(dir) {
            continue;
        }
        // A directory that may be skipped is excluded, and so is everything
        // below it: skipping must never drop a path that is kept.
        assert!(excluded, "{patterns:?} {dir:?}");
        // (`..` would climb out of the directory.)
        for below in paths.iter().filter(|p| !p.split('/').any(|c| c == "..")) {
            let child = format!("{dir}/{below}");
            assert!(rules.is_excluded(&child), "{patterns:?} {child:?}");
        }
    }
});
