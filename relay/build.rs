fn main() {
    keyhole_ebpf_build::build_programs(&["relay"]);
}
