//! Replays the fuzzers' kept inputs (`fuzz/regressions/<target>/`) through
//! the same code the fuzz targets drive, so a crash once found stays fixed.

use std::path::{Path, PathBuf};

use toka_core::RuntimeConfig;
use toka_runtime::host::engine::{EngineOptions, new_engine};
use toka_runtime::host::{module, new_linker};

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs kept in {}", dir.display());
    files
}

#[test]
fn config_inputs_give_errors_not_panics() {
    for file in inputs("config") {
        let bytes = std::fs::read(&file).unwrap();
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        let env = |name: &str| (name == "SET").then(|| "value".to_owned());
        if let Err(e) = RuntimeConfig::parse_str_with_env(
            text,
            Path::new("fuzz.toml"),
            Path::new("/base"),
            &["drivers"],
            &env,
        ) {
            assert!(
                e.to_string().contains("fuzz.toml"),
                "{}: {e}",
                file.display()
            );
        }
    }
}

#[test]
fn module_inputs_are_refused_naming_the_file() {
    let engine = new_engine(&EngineOptions::default()).unwrap();
    let linker = new_linker(&engine).unwrap();
    for file in inputs("module") {
        let bytes = std::fs::read(&file).unwrap();
        let path = Path::new("fuzz.wasm");
        let outcome = module::compile(&engine, path, &bytes)
            .and_then(|component| module::prelink(&linker, path, component).map(|_| ()));
        if let Err(e) = outcome {
            assert!(
                e.to_string().contains("fuzz.wasm"),
                "{}: {e}",
                file.display()
            );
        }
    }
}
