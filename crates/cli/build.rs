//! Link flags of the `cairn` binary (only its own; test binaries keep the
//! defaults).

fn main() {
    // Pack the ~31,000 relative relocations of this PIE as DT_RELR (glibc
    // 2.36+, binutils 2.38+): the dynamic loader reads a few KB instead of
    // ~750 KB of RELA entries at every start (docs/performance.md, stop 17).
    // ASLR and RELRO are unchanged: the same pointers are relocated. `-no-pie`
    // would save ~0.3 ms more per start and was refused: the executable keeps
    // ASLR (stop 19; `tests/run_rm_cli.rs` checks it stays a PIE).
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
