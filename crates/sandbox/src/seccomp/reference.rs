//! The filter as it was built before our own emitter: Docker's profile
//! through seccompiler (a dev-dependency now), kept as the reference the
//! new program's decisions are checked against.

use super::{ALLOWED, NS_FLAGS, PERSONALITIES};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;

/// The two stacked programs (allow list, then clone3's ENOSYS), packed.
pub fn programs() -> [super::Program; 2] {
    [allow_list(), clone3_enosys()]
}

fn arch() -> seccompiler::TargetArch {
    std::env::consts::ARCH.try_into().unwrap()
}

fn rule(index: u8, len: SeccompCmpArgLen, op: SeccompCmpOp, value: u64) -> SeccompRule {
    let cond = SeccompCondition::new(index, len, op, value).unwrap();
    SeccompRule::new(vec![cond]).unwrap()
}

fn allow_list() -> super::Program {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|nr| (*nr, vec![])).collect();
    let qword_none = |mask| rule(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(mask), 0);
    rules.insert(libc::SYS_clone, vec![qword_none(NS_FLAGS)]);
    let user = libc::CLONE_NEWUSER as u64;
    rules.insert(libc::SYS_unshare, vec![qword_none(NS_FLAGS & !user)]);
    let vsock = rule(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, 40);
    rules.insert(libc::SYS_socket, vec![vsock]);
    let personalities = PERSONALITIES
        .iter()
        .map(|v| rule(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, u64::from(*v)))
        .collect();
    rules.insert(libc::SYS_personality, personalities);
    let errno = SeccompAction::Errno(libc::EPERM as u32);
    pack(SeccompFilter::new(rules, errno, SeccompAction::Allow, arch()).unwrap())
}

fn clone3_enosys() -> super::Program {
    let rules = [(libc::SYS_clone3, vec![])].into_iter().collect();
    let enosys = SeccompAction::Errno(libc::ENOSYS as u32);
    pack(SeccompFilter::new(rules, SeccompAction::Allow, enosys, arch()).unwrap())
}

fn pack(filter: SeccompFilter) -> super::Program {
    let bpf: BpfProgram = filter.try_into().unwrap();
    bpf.iter()
        .map(|i| {
            u64::from(i.code) | u64::from(i.jt) << 16 | u64::from(i.jf) << 24 | u64::from(i.k) << 32
        })
        .collect()
}
