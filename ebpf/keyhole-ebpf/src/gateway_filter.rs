//! The gateway's policy filter: a TC classifier on the tunnel interface.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

#[cfg(target_arch = "bpf")]
mod prog {
    use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

    #[classifier]
    pub fn keyhole_policy(_ctx: TcContext) -> i32 {
        TC_ACT_OK
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

/// Host builds of this crate are empty: the program only exists for BPF.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
