//! Link flags of the `cairn` binary (only its own; test binaries keep the
//! defaults).

fn main() {
    // Link `cairn` as a position-dependent executable. As a PIE, every start
    // relocated ~31,000 pointers in `.data.rel.ro` (551 KB: vtables, panic
    // locations, string tables), a copy-on-write fault per page in the CLI
    // and again in the sandbox helper it forks: ~130 of the ~290 page faults
    // and ~0.3 ms of CPU of every start, a third of a `run --rm`'s CLI start
    // (docs/performance.md, stop 19). Linked at a fixed address those
    // pointers are final in the file and its pages are shared read-only.
    // The code is still compiled position-independent (the libraries and
    // test binaries are unchanged); the executable's own image loses ASLR,
    // while the stack, heap, mmaps and shared libraries keep it. RELRO and
    // BIND_NOW stay. (Stop 17 packed the PIE's relocations as DT_RELR, which
    // halved the loader's reading but kept the faults.)
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
