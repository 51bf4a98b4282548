//! A classic-BPF interpreter for the seccomp tests: runs a program on a
//! `seccomp_data` the way the kernel does, for the instructions seccomp
//! filters use (loads of the data, constant jumps, AND, returns).

pub const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
pub const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
pub const RET_ERRNO: u32 = libc::SECCOMP_RET_ERRNO;

/// `struct seccomp_data` without `ip`.
pub struct Data {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

impl Data {
    fn word(&self, off: u32) -> u32 {
        match off {
            0 => self.nr,
            4 => self.arch,
            8 | 12 => 0,
            16..=63 if off % 4 == 0 => {
                let arg = self.args[(off as usize - 16) / 8];
                if off % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load at {off}"),
        }
    }
}

/// The kernel's order of precedence between stacked filters' answers:
/// lower is stricter (`ACTION_ONLY` compared as signed).
pub fn strictness(ret: u32) -> i32 {
    (ret & libc::SECCOMP_RET_ACTION_FULL) as i32
}

/// Run `program` (packed instructions) on `data`; its return value.
pub fn run(program: &[u64], data: &Data) -> u32 {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let w = program[pc];
        let (code, jt, jf, k) = (
            w as u16 as u32,
            (w >> 16) as u8,
            (w >> 24) as u8,
            (w >> 32) as u32,
        );
        pc += 1;
        let jump = |cond: bool| if cond { jt as usize } else { jf as usize };
        match code {
            c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => a = data.word(k),
            c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => a &= k,
            c if c == libc::BPF_JMP | libc::BPF_JA => pc += k as usize,
            c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => pc += jump(a == k),
            c if c == libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K => pc += jump(a > k),
            c if c == libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K => pc += jump(a >= k),
            c if c == libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K => pc += jump(a & k != 0),
            c if c == libc::BPF_RET | libc::BPF_K => return k,
            other => panic!("instruction {other:#x} at {}", pc - 1),
        }
    }
}
