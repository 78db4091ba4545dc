//! Module loading on arbitrary bytes as a `.wasm`: header checks, component
//! validation and compilation, and linking against the host must reject bad
//! input with an error naming the file, never panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use toka_runtime::host::engine::{EngineOptions, new_engine};
use toka_runtime::host::{HostState, new_linker};
use wasmtime::Engine;
use wasmtime::component::Linker;

fn host() -> &'static (Engine, Linker<HostState>) {
    static HOST: OnceLock<(Engine, Linker<HostState>)> = OnceLock::new();
    HOST.get_or_init(|| {
        let engine = new_engine(&EngineOptions::default()).expect("engine");
        let linker = new_linker(&engine).expect("linker");
        (engine, linker)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let (engine, linker) = host();
    let path = Path::new("fuzz.wasm");
    match toka_runtime::host::module::compile(engine, path, bytes) {
        Ok(component) => {
            if let Err(e) = toka_runtime::host::module::prelink(linker, path, component) {
                assert!(e.to_string().contains("fuzz.wasm"));
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz.wasm")),
    }
});
