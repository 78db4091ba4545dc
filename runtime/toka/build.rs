//! Inside the Toka repository, build the example guests into
//! `target/modules/` so `toka run config/minimal.toml` finds them. Outside
//! the repository (a packaged `toka`), there is nothing to build.
//! Set `TOKA_SKIP_GUESTS=1` to skip (e.g. when only the binary is wanted).
//!
//! (`toka --version` lists the build's features from the runtime's own
//! list of capabilities, `toka_runtime::host::caps::BUILT`, not from here.)

fn main() {
    println!("cargo:rerun-if-env-changed=TOKA_SKIP_GUESTS");
    if std::env::var_os("TOKA_SKIP_GUESTS").is_some() {
        return;
    }
    if !toka_guest_build::guests_dir().join("Cargo.toml").exists() {
        return;
    }
    let modules = toka_guest_build::demo_modules_dir();
    let target = modules.with_file_name("guest-build");
    toka_guest_build::build(&target, &modules);
    // `toka bench` runs the repo's own `sink` guest from here.
    println!("cargo:rustc-env=TOKA_BENCH_MODULES={}", modules.display());
}
