//! Builds the kernel programs (`agent-ebpf`) for the BPF target and leaves the object in OUT_DIR,
//! where `collect::ebpf` embeds it with `include_bytes_aligned!`.
//!
//! The BPF build runs with Debian's rustc (`/usr`, package rustc-web) because it ships the std
//! sources that `-Z build-std=core` needs; `cargo xtask setup` installs it. RUSTC_BOOTSTRAP lets
//! that stable compiler accept `-Z build-std` (aya-build only adds it for nightly otherwise).
use anyhow::{anyhow, Context as _};
use aya_build::{build_ebpf, Package, Toolchain};

/// Where `cargo xtask setup` puts the BPF-capable toolchain.
const BPF_TOOLCHAIN: &str = "/usr";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=BALLAST_BPF_TOOLCHAIN");
    let toolchain = std::env::var("BALLAST_BPF_TOOLCHAIN").unwrap_or_else(|_| BPF_TOOLCHAIN.into());
    if !std::path::Path::new(&toolchain)
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        return Err(anyhow!(
            "no Rust std sources under {toolchain}/lib/rustlib/src: the BPF build needs them; run \
             `cargo xtask setup` (installs Debian's rustc-web and rust-web-src)"
        ));
    }
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata failed")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "ballast-ebpf")
        .ok_or_else(|| anyhow!("package ballast-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("ballast-ebpf manifest has no parent directory"))?;
    // aya-build reads this from our environment and passes it on to the BPF cargo; build scripts
    // are single-threaded, so setting it here is sound.
    std::env::set_var("RUSTC_BOOTSTRAP", "1");
    build_ebpf(
        [Package {
            name: "ballast-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
}
