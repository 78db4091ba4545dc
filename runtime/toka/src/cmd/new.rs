//! `toka new agent <name>`: create a ready-to-build Rust agent crate (the
//! scaffold itself is in [`crate::scaffold`]).

use std::path::PathBuf;

use crate::scaffold;

/// What `toka new` creates.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum NewCmd {
    /// A ready-to-build Rust agent crate.
    Agent {
        /// Crate (and agent) name.
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

pub(crate) fn run(cmd: NewCmd) -> anyhow::Result<()> {
    let NewCmd::Agent { name, dir } = cmd;
    let path = scaffold::new_agent(&dir, &name)?;
    println!("created agent crate {}", path.display());
    println!(
        "build it:  cd {} && cargo build --release --target wasm32-wasip2",
        path.display()
    );
    println!("run it:    toka run {}/toka.toml --for 5s", path.display());
    Ok(())
}
