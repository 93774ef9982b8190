//! Rebuild the kernel object when bpf-linker changes (it is the linker of this crate), as the
//! aya template does; `cargo xtask setup` installs it.
fn main() {
    match which::which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(err) => println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`"),
    }
}
