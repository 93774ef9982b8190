//! `cargo xtask setup`: make this machine able to build and test Ballast.
//!
//! The recipe (measured on Debian 12, kernel 6.18, see ../shared/TOOLCHAIN.md):
//! - Debian's `rustc-web` + `rust-web-src` give a rustc whose std sources match it, which
//!   `-Z build-std=core` needs for the BPF target (rustup cannot fetch `rust-src` here);
//! - `llvm-22-dev` is the LLVM that bpf-linker links against;
//! - `bpf-linker` 0.13 from crates.io, built against that LLVM.
//!
//! The deployment checks (tests/tests/deploy.rs) need Debian's `prometheus` (promtool) and
//! `prometheus-alertmanager` (amtool), and a Python venv with `kubernetes-validate` (the
//! Kubernetes OpenAPI schemas, offline) and `pykustomize` (the kustomize library: Debian 12
//! packages no kustomize and Go modules cannot be fetched here).
//!
//! Everything is checked first and only what is missing is installed, so the command is cheap
//! to call before every `run`, `test` and `bench`.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

/// Debian packages the build needs.
const BUILD_PACKAGES: &[&str] = &["rustc-web", "rust-web-src", "llvm-22-dev"];
/// Debian packages the test suite and benchmarks use as real peers and ground truth.
const TEST_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "procps",
    "nftables",
    "iperf3",
    "prometheus",
    "prometheus-alertmanager",
    "python3-venv",
];

/// The venv of the deployment checks; tests/src/deploy.rs looks for it here (or in
/// `BALLAST_VENV`).
const VENV: &str = "/opt/ballast-venv";
/// Its packages, pinned: (name, version).
const VENV_PACKAGES: [(&str, &str); 2] =
    [("kubernetes-validate", "1.37.0"), ("pykustomize", "0.1.4")];

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
    if need == Need::Test {
        ensure_venv()?;
    }
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

fn ensure_venv() -> Result<()> {
    let python = PathBuf::from(VENV).join("bin/python");
    if !python.is_file() {
        eprintln!("setup: creating the Python venv {VENV}");
        run(Command::new("/usr/bin/python3").args(["-m", "venv", VENV])).context(
            "setup: creating the venv failed; is python3-venv installed (dpkg -l python3-venv)?",
        )?;
    }
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "list",
            "--format=freeze",
            "--disable-pip-version-check",
        ])
        .output()
        .with_context(|| format!("setup: running {} -m pip list", python.display()))?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    let present = |name: &str, version: &str| {
        installed
            .lines()
            .any(|line| line == format!("{name}=={version}"))
    };
    let missing: Vec<(&str, &str)> = VENV_PACKAGES
        .into_iter()
        .filter(|(name, version)| !present(name, version))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: venv {VENV} has {VENV_PACKAGES:?}");
        return Ok(());
    }
    eprintln!("setup: installing {missing:?} into {VENV}");
    let pip = || {
        let mut command = Command::new(&python);
        command.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ]);
        command
    };
    let [(validate, validate_version), (kustomize, kustomize_version)] = VENV_PACKAGES;
    run(pip()
        .arg(format!("{validate}=={validate_version}"))
        // pykustomize's one dependency, installed normally.
        .arg("cffi>=1.16"))
    .context("setup: pip could not install kubernetes-validate; is PyPI reachable?")?;
    // pykustomize declares Python >= 3.14 though its code (cffi bindings to the bundled kustomize
    // library) runs on Debian 12's 3.11; the import check below proves it on this machine.
    run(pip()
        .args(["--no-deps", "--ignore-requires-python"])
        .arg(format!("{kustomize}=={kustomize_version}")))
    .context("setup: pip could not install pykustomize; is PyPI reachable?")?;
    run(Command::new(&python).args(["-c", "import pykustomize; pykustomize.native_version()"]))
        .context("setup: the kustomize library in pykustomize does not load on this machine")
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
