//! `cargo xtask setup`: make this machine able to build and test Ballast.
//!
//! The recipe (measured on Debian 12, kernel 6.18, see ../shared/TOOLCHAIN.md):
//! - Debian's `rustc-web` + `rust-web-src` give a rustc whose std sources match it, which
//!   `-Z build-std=core` needs for the BPF target (rustup cannot fetch `rust-src` here);
//! - `llvm-22-dev` is the LLVM that bpf-linker links against;
//! - `bpf-linker` 0.13 from crates.io, built against that LLVM.
//!
//! Everything is checked first and only what is missing is installed, so the command is cheap
//! to call before every `run`, `test` and `bench`.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

/// Debian packages the build needs.
const BUILD_PACKAGES: &[&str] = &["rustc-web", "rust-web-src", "llvm-22-dev"];
/// Debian packages the test suite and benchmarks use as real peers and ground truth.
const TEST_PACKAGES: &[&str] = &["bpftool", "iproute2", "procps", "nftables", "iperf3"];

const BPF_LINKER_VERSION: &str = "0.13.0";
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Which set of tools a command needs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Build,
    Test,
}

pub fn ensure(need: Need) -> Result<()> {
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if need == Need::Test {
        packages.extend_from_slice(TEST_PACKAGES);
    }
    let missing: Vec<&str> = packages.into_iter().filter(|p| !deb_installed(p)).collect();
    if missing.is_empty() {
        eprintln!("setup: Debian packages present");
    } else {
        apt_install(&missing)?;
    }
    ensure_bpf_linker()?;
    Ok(())
}

fn deb_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

fn apt_install(missing: &[&str]) -> Result<()> {
    if which("apt-get").is_none() {
        bail!(
            "setup: missing packages {missing:?} and no apt-get on this machine; install them with your \
             package manager (Debian 12 names) and run again"
        );
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("setup: missing packages {missing:?}; run `cargo xtask setup` as root (apt-get needs it)");
    }
    eprintln!("setup: installing Debian packages {missing:?}");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Where cargo puts installed binaries for the rustup toolchain that runs xtask.
pub fn cargo_bin_dir() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cargo")
        });
    home.join("bin")
}

fn ensure_bpf_linker() -> Result<()> {
    let linker = cargo_bin_dir().join("bpf-linker");
    let current = Command::new(&linker)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(version) = &current {
        if version.contains(BPF_LINKER_VERSION) {
            eprintln!("setup: {version} present");
            return Ok(());
        }
        eprintln!("setup: found {version}, want {BPF_LINKER_VERSION}: reinstalling");
    } else {
        eprintln!(
            "setup: installing bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)"
        );
    }
    // bpf-linker's build looks for LLVM through LLVM_PREFIX; without it it finds Debian's
    // default llvm-config (LLVM 14) and fails with "unable to find library -lLLVM".
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
            ])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
    .context("setup: building bpf-linker failed; is llvm-22-dev installed (dpkg -l llvm-22-dev)?")
}

pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}

pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {status}", command);
    }
    Ok(())
}
