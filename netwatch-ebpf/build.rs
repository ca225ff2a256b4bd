//! Rebuilds the eBPF object when bpf-linker changes (a new linker can change the output), and
//! tells bpf-linker how to generate code for the kernels netwatch supports.
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
    // Header fields sit at any alignment in a frame (an IPv4 header starts 14 bytes in).
    // Without this feature LLVM reads every multi-byte field one byte at a time and calls a
    // byte-loop memset/memcpy for small copies; with it, one load or store per field. The
    // verifier allows unaligned packet and map-value access on the architectures where the
    // kernel has efficient unaligned access (x86-64, arm64), the ones netwatch targets; stack
    // slots stay aligned (LLVM aligns them itself).
    println!("cargo:rustc-link-arg-bins=--cpu-features=+allows-misaligned-mem-access");
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
}
