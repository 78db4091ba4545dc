//! What a component asks for: its imports and exports, which Toka and WASI
//! capabilities those imports correspond to, and whether this host can run
//! it. Backs `toka inspect`.

use std::fmt;
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;

use super::module::{self, ModuleError};

/// One import or export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its full name, e.g. `toka:runtime/bus@0.1.0`.
    pub name: String,
    /// Functions it holds (for instances) or its own name (for a function).
    pub functions: Vec<String>,
}

/// The result of inspecting a component.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Imports, in the component's order.
    pub imports: Vec<Item>,
    /// Exports, in the component's order.
    pub exports: Vec<Item>,
    /// `Ok` if this host can run it as an agent, else why not.
    pub runnable: Result<(), String>,
}

/// What importing `name` means for an agent running under Toka.
pub fn capability(name: &str) -> &'static str {
    let iface = name.split('@').next().unwrap_or(name);
    // The capabilities built in say what their interfaces (`toka:` and
    // others, such as `wasi:keyvalue/*`) give.
    if let Some((_, line)) = super::caps::INTERFACES
        .iter()
        .flat_map(|served| served.iter())
        .find(|(served, _)| *served == iface)
    {
        return line;
    }
    match iface {
        "toka:runtime/types" => "toka types",
        "toka:runtime/bus" => "toka bus: publish events (within the `publish` grant)",
        "toka:runtime/log" => "toka log: structured logs tagged with the agent name",
        "toka:runtime/request" => "toka request: ask a serving agent (within the `request` grant)",
        "toka:runtime/responder" => "toka responder: serve requests (within the `serve` grant)",
        i if i.starts_with("wasi:filesystem/") => "wasi filesystem: linked, no directories granted",
        i if i.starts_with("wasi:sockets/") => "wasi sockets: linked, all network use denied",
        "wasi:cli/environment" => "wasi environment: empty (no env vars, no args)",
        i if i.starts_with("wasi:cli/std") || i.starts_with("wasi:cli/terminal") => {
            "wasi stdio: stdout/stderr to the host log (capped), stdin closed"
        }
        "wasi:cli/exit" => "wasi exit: ends the instance (treated as a fault)",
        i if i.starts_with("wasi:clocks/") => "wasi clocks: millisecond resolution",
        i if i.starts_with("wasi:random/") => "wasi random",
        i if i.starts_with("wasi:io/") => "wasi io: streams and polling",
        i if i.starts_with("toka:") => "toka interface not provided by this host version",
        _ => "not provided by Toka",
    }
}

fn item(engine: &Engine, name: &str, ty: &ComponentItem) -> Item {
    let functions = match ty {
        ComponentItem::ComponentInstance(inst) => {
            inst.exports(engine).map(|(n, _)| n.to_string()).collect()
        }
        ComponentItem::ComponentFunc(_) => vec![name.to_string()],
        _ => Vec::new(),
    };
    Item {
        name: name.to_string(),
        functions,
    }
}

/// Inspect the component at `path`, checking it against `linker`; read and
/// compiled as `load` says.
pub fn inspect(
    engine: &Engine,
    linker: &wasmtime::component::Linker<super::HostState>,
    path: &Path,
    load: &module::LoadOptions,
) -> Result<Inspection, ModuleError> {
    let bytes = module::read(path, load.max_bytes)?;
    let component = load.compiler.compile(engine, path, &bytes)?;
    let ty = component.component_type();
    let imports = ty
        .imports(engine)
        .map(|(n, e)| item(engine, n, &e.ty))
        .collect();
    let exports = ty
        .exports(engine)
        .map(|(n, e)| item(engine, n, &e.ty))
        .collect();
    let runnable = module::prelink(linker, path, component)
        .map(drop)
        .map_err(|e| e.reason);
    Ok(Inspection {
        path: path.to_path_buf(),
        size: bytes.len() as u64,
        imports,
        exports,
        runnable,
    })
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({} bytes, component)",
            self.path.display(),
            self.size
        )?;
        match &self.runnable {
            Ok(()) => writeln!(f, "runnable as a Toka agent: yes")?,
            Err(why) => writeln!(f, "runnable as a Toka agent: no: {why}")?,
        }
        writeln!(f, "imports ({}):", self.imports.len())?;
        for i in &self.imports {
            writeln!(f, "  {:<40} {}", i.name, capability(&i.name))?;
        }
        writeln!(f, "exports ({}):", self.exports.len())?;
        for e in &self.exports {
            writeln!(f, "  {} [{}]", e.name, e.functions.join(", "))?;
        }
        Ok(())
    }
}
