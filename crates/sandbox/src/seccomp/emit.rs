//! Our classic-BPF emitter for the default filter: the architecture check,
//! then a binary search over the syscall numbers grouped into runs of equal
//! verdict, each leaf a return or a short check of the first argument.
//!
//! Why not seccompiler (docs/sandbox.md): it emits one compare per syscall
//! in a linear chain (1,541 instructions for Docker's profile), so the
//! kernel walks hundreds of instructions per filtered call and per syscall
//! number when it builds its allow cache at install; the search is 6 deep.

use std::collections::BTreeMap;

/// What the filter answers for one syscall number. Argument checks look at
/// the low 32 bits of the first argument only, as the old seccompiler rules
/// did (their masks and values fit in 32 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Errno(u32),
    /// Allowed when none of these bits is set, EPERM otherwise.
    Arg0NoneOf(u32),
    /// Allowed unless it equals this value, EPERM otherwise.
    Arg0Not(u32),
    /// Allowed when it is one of these values, EPERM otherwise.
    Arg0OneOf(&'static [u32]),
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
/// Offsets in `struct seccomp_data` (nr, arch, ip, args[6]); the low half
/// of args[0] on a little-endian machine.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LO: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

fn errno(e: u32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e & libc::SECCOMP_RET_DATA)
}

/// One instruction packed as [`super::Program`] carries it.
fn insn(code: u16, jt: u8, jf: u8, k: u32) -> u64 {
    u64::from(code) | u64::from(jt) << 16 | u64::from(jf) << 24 | u64::from(k) << 32
}

/// A run of syscall numbers `start..` (up to the next run's start) with one
/// verdict.
type Run = (u32, Verdict);

/// Compile `table` (number, verdict; every other number gets EPERM) into a
/// program: a foreign architecture kills the process, numbers are looked
/// up by binary search.
pub fn compile(table: &[(u32, Verdict)]) -> Result<super::Program, String> {
    let mut by_nr = BTreeMap::new();
    for &(nr, v) in table {
        if by_nr.insert(nr, v).is_some() {
            return Err(format!("seccomp: syscall {nr} has two verdicts"));
        }
    }
    let runs = runs(&by_nr);
    let mut out = vec![
        insn(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        insn(BPF_JEQ_K, 1, 0, AUDIT_ARCH),
        insn(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
        insn(BPF_LD_W_ABS, 0, 0, OFF_NR),
    ];
    search(&runs, &mut out)?;
    if out.len() > libc::BPF_MAXINSNS as usize {
        return Err(format!(
            "seccomp: {} instructions, over the kernel's limit",
            out.len()
        ));
    }
    Ok(out)
}

/// Runs of equal verdict covering 0..=u32::MAX, in order.
fn runs(by_nr: &BTreeMap<u32, Verdict>) -> Vec<Run> {
    let deny = Verdict::Errno(libc::EPERM as u32);
    let mut runs: Vec<Run> = Vec::new();
    let mut push = |start: u64, v: Verdict| {
        if runs.last().map(|r| r.1) != Some(v) {
            runs.push((start as u32, v));
        }
    };
    // The first number not covered yet (u64: one past u32::MAX fits).
    let mut next: u64 = 0;
    for (&nr, &v) in by_nr {
        if u64::from(nr) > next {
            push(next, deny);
        }
        push(u64::from(nr), v);
        next = u64::from(nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        push(next, deny);
    }
    runs
}

/// Emit the search over `runs` (A holds the syscall number): `jge` on the
/// middle run's start, the lower half next, the upper half after it.
fn search(runs: &[Run], out: &mut Vec<u64>) -> Result<(), String> {
    if let [(_, verdict)] = runs {
        leaf(*verdict, out);
        return Ok(());
    }
    let mid = runs.len() / 2;
    let at = out.len();
    out.push(0);
    search(&runs[..mid], out)?;
    let skip = u8::try_from(out.len() - at - 1)
        .map_err(|_| "seccomp: a search branch is too long for a BPF jump".to_string())?;
    out[at] = insn(BPF_JGE_K, skip, 0, runs[mid].0);
    search(&runs[mid..], out)
}

fn leaf(verdict: Verdict, out: &mut Vec<u64>) {
    let eperm = errno(libc::EPERM as u32);
    match verdict {
        Verdict::Allow => out.push(insn(BPF_RET_K, 0, 0, RET_ALLOW)),
        Verdict::Errno(e) => out.push(insn(BPF_RET_K, 0, 0, errno(e))),
        Verdict::Arg0NoneOf(mask) => out.extend([
            insn(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO),
            insn(BPF_JSET_K, 1, 0, mask),
            insn(BPF_RET_K, 0, 0, RET_ALLOW),
            insn(BPF_RET_K, 0, 0, eperm),
        ]),
        Verdict::Arg0Not(value) => out.extend([
            insn(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO),
            insn(BPF_JEQ_K, 1, 0, value),
            insn(BPF_RET_K, 0, 0, RET_ALLOW),
            insn(BPF_RET_K, 0, 0, eperm),
        ]),
        Verdict::Arg0OneOf(values) => {
            out.push(insn(BPF_LD_W_ABS, 0, 0, OFF_ARG0_LO));
            let n = values.len();
            for (i, v) in values.iter().enumerate() {
                // Past the other compares and the EPERM return.
                let to_allow = (n - 1 - i + 1) as u8;
                out.push(insn(BPF_JEQ_K, to_allow, 0, *v));
            }
            out.push(insn(BPF_RET_K, 0, 0, eperm));
            out.push(insn(BPF_RET_K, 0, 0, RET_ALLOW));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_everything_in_order_without_repeats() {
        let a = Verdict::Allow;
        let table: BTreeMap<u32, Verdict> = [(0, a), (1, a), (3, a), (u32::MAX, a)].into();
        let r = runs(&table);
        let eperm = Verdict::Errno(libc::EPERM as u32);
        assert_eq!(
            r,
            vec![(0, a), (2, eperm), (3, a), (4, eperm), (u32::MAX, a)]
        );
    }

    #[test]
    fn two_verdicts_for_one_number_are_refused() {
        let t = [(1, Verdict::Allow), (1, Verdict::Errno(1))];
        assert!(compile(&t).is_err());
    }
}
