//! Build-script helper that compiles the repo's `guests/` workspace into
//! `wasm32-wasip2` components, the way wasmtime's test-programs artifact crate
//! does.
//!
//! Used from the `build.rs` of the `toka` CLI (so the demo configs find their
//! modules) and of the integration tests (which get path constants). It:
//! - installs the `wasm32-wasip2` target with rustup when it is missing, with a
//!   clear message if that fails;
//! - runs `cargo build --release --target wasm32-wasip2` on `guests/` with its
//!   own target directory, so the child cargo never waits on the outer one's lock;
//! - strips `CARGO_ENCODED_RUSTFLAGS` and friends so host-only flags do not leak
//!   into the wasm build;
//! - copies the resulting components into one flat directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guests that were built.
#[derive(Debug, Clone)]
pub struct Guests {
    /// Directory holding `<crate_name>.wasm` for every guest.
    pub dir: PathBuf,
    /// `(crate_name, path)` for every guest, sorted by name.
    pub modules: Vec<(String, PathBuf)>,
}

const TARGET: &str = "wasm32-wasip2";

fn workspace_root() -> PathBuf {
    // The calling package's directory, read when the build script runs:
    // this crate's own path is baked in when *it* is compiled, and a build
    // directory reused from another checkout would otherwise build (or
    // skip) that checkout's guests.
    let caller = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    if let Some(root) = caller.as_deref().and_then(|dir| {
        dir.ancestors()
            .find(|a| a.join("guests").join("Cargo.toml").exists() && a.join("wit").is_dir())
    }) {
        return root.to_path_buf();
    }
    // This crate lives at <root>/runtime/toka-guest-build.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("toka-guest-build sits two levels below the workspace root")
        .to_path_buf()
}

/// The `guests/` workspace directory.
pub fn guests_dir() -> PathBuf {
    workspace_root().join("guests")
}

/// Where the demo configs expect the example modules: `<root>/target/modules`.
pub fn demo_modules_dir() -> PathBuf {
    workspace_root().join("target").join("modules")
}

fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) => {}
        Ok(_) => {
            println!(
                "cargo:warning=installing the {TARGET} target with rustup (needed for the guests)"
            );
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                panic!(
                    "could not install the {TARGET} Rust target, which the example and test \
                     guests need. Run `rustup target add {TARGET}` and build again."
                );
            }
        }
        // No rustup: the toolchain may still have the target (distro Rust); let cargo say.
        Err(_) => {}
    }
}

/// Build every guest and copy the components into `out_dir`.
///
/// `target_dir` is the cargo target directory for the guest build; it must not
/// be the outer build's target directory.
pub fn build(target_dir: &Path, out_dir: &Path) -> Guests {
    let guests = guests_dir();
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.toml").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        guests.join("Cargo.lock").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        workspace_root().join("wit").display()
    );
    // Each guest crate sits in a directory of its own name.
    let mut names = Vec::new();
    for entry in fs::read_dir(&guests).expect("read guests/") {
        let path = entry.expect("guests/ entry").path();
        if path.join("Cargo.toml").exists() {
            println!("cargo:rerun-if-changed={}", path.join("src").display());
            println!(
                "cargo:rerun-if-changed={}",
                path.join("Cargo.toml").display()
            );
            names.push(
                path.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .replace('-', "_"),
            );
        }
    }
    ensure_target();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests)
        .args(["build", "--release", "--target", TARGET, "--workspace"])
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let status = cmd.status().expect("spawn cargo for the guests");
    assert!(
        status.success(),
        "building the guests in {} failed",
        guests.display()
    );

    let built = target_dir.join(TARGET).join("release");
    fs::create_dir_all(out_dir).expect("create the modules directory");
    let mut modules = Vec::new();
    // Only this workspace's guests: the build directory may be shared with
    // other crates (the `toka new agent` test reuses it).
    for name in names {
        let path = built.join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "guest `{name}` produced no {}",
            path.display()
        );
        let dest = out_dir.join(path.file_name().unwrap());
        // Copy only on change so the demo dir's mtimes stay stable for the compile cache.
        if fs::read(&dest).ok() != fs::read(&path).ok() {
            fs::copy(&path, &dest).expect("copy guest module");
        }
        modules.push((name, dest));
    }
    modules.sort();
    Guests {
        dir: out_dir.to_path_buf(),
        modules,
    }
}
