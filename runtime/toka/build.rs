//! Inside the Toka repository, build the example guests into
//! `target/modules/` so `toka run config/minimal.toml` finds them. Outside
//! the repository (a packaged `toka`), there is nothing to build.
//! Set `TOKA_SKIP_GUESTS=1` to skip (e.g. when only the binary is wanted).
//!
//! Also records the enabled features for `toka --version`, so an operator
//! can tell a runtime-only build from a full one.

fn main() {
    let features: Vec<&str> = ["compiler", "secrets", "vault", "auth"]
        .into_iter()
        .filter(|f| std::env::var_os(format!("CARGO_FEATURE_{}", f.to_uppercase())).is_some())
        .collect();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(", ")
    };
    let flavour = if features.contains("compiler") {
        ""
    } else {
        "runtime-only; "
    };
    println!("cargo:rustc-env=TOKA_FEATURES={flavour}features: {features}");
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
