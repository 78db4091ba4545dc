//! Builds the guests and writes `gen.rs`: a path constant per guest and a
//! `foreach_guest!` macro so every guest must have a test.

use std::fmt::Write as _;

fn main() {
    let modules = toka_guest_build::demo_modules_dir();
    let target = modules.with_file_name("guest-build");
    let guests = toka_guest_build::build(&target, &modules);
    let mut out = String::new();
    writeln!(out, "/// Directory holding every guest component.").unwrap();
    writeln!(
        out,
        "pub const GUESTS_DIR: &str = {:?};",
        guests.dir.display().to_string()
    )
    .unwrap();
    for (name, path) in &guests.modules {
        writeln!(out, "/// Path of the `{name}` guest component.").unwrap();
        writeln!(
            out,
            "pub const {}: &str = {:?};",
            name.to_uppercase(),
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(out, "/// Calls `$mac!(guest_name)` for every guest.").unwrap();
    writeln!(
        out,
        "#[macro_export]\nmacro_rules! foreach_guest {{ ($mac:ident) => {{"
    )
    .unwrap();
    for (name, _) in &guests.modules {
        writeln!(out, "    $mac!({name});").unwrap();
    }
    writeln!(out, "}} }}").unwrap();
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("gen.rs");
    std::fs::write(dest, out).unwrap();
}
